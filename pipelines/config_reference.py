"""The configuration reference (docs/configuration.md), generated from the typed config:
every key with its type, what base.yaml sets, what each environment's file changes, and
the field's description. `tailor config reference` prints it; a test keeps the committed
file equal to the output, so a new key cannot go undocumented."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipelines.config import ENVIRONMENTS, Config, bundled_conf_dir, read_yaml_mapping

_MISSING = object()


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The nested config section a field holds, if it is one (also when Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [arg for arg in typing.get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]
        return found[0] if found else None
    return None


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return text.replace("NoneType", "null").replace(" | ", " or ")


def _at(mapping: dict[str, Any], path: list[str]) -> Any:
    for part in path:
        if not isinstance(mapping, dict) or part not in mapping:
            return _MISSING
        mapping = mapping[part]
    return mapping


def _shown(value: Any) -> str:
    if value is _MISSING:
        return ""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return f"`{text if len(text) <= 160 else text[:157] + '...'}`".replace("|", "\\|")


def _default(field: FieldInfo) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return _MISSING


def _rows(model: type[BaseModel], path: list[str], files: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for name, field in model.model_fields.items():
        here = [*path, name]
        section = _model_of(field.annotation)
        if section is not None and typing.get_origin(field.annotation) is not dict:
            rows += _rows(section, here, files)
            continue
        base = _at(files["base"], here)
        overrides = [f"{env}: {_shown(_at(files[env], here))}" for env in ENVIRONMENTS
                     if _at(files[env], here) is not _MISSING]
        default = base if base is not _MISSING else _default(field)
        rows.append((f"`{'.'.join(here)}`", _type_name(field.annotation), _shown(default),
                     "; ".join(overrides), (field.description or "").replace("|", "\\|")))
    return rows


def configuration_reference(conf_dir: Path | None = None) -> str:
    folder = conf_dir or bundled_conf_dir()
    files = {"base": read_yaml_mapping(folder / "base.yaml"),
             **{env: read_yaml_mapping(folder / f"{env}.yaml") for env in ENVIRONMENTS}}
    lines = [
        "# Configuration reference",
        "",
        "Generated from the typed configuration (`pipelines/config.py`) by `tailor config reference`;",
        "`tests/pipelines/test_config_reference.py` fails when this file and the code differ.",
        "",
        "`conf/base.yaml` is overlaid by `conf/<env>.yaml`, then by each `--set key=value`.",
        "Relative paths sit under `storage.root` or beside the config files, as each key says.",
        "Secrets are never values here: each `secrets.*` key names the environment variable",
        "that holds one.",
        "",
    ]
    rows = _rows(Config, [], files)
    sections: dict[str, list[tuple[str, ...]]] = {}
    for row in rows:
        key = row[0].strip("`")
        sections.setdefault(key.split(".")[0] if "." in key else "(top level)", []).append(row)
    for section, members in sections.items():
        title = section if section.startswith("(") else f"`{section}`"
        lines += [f"## {title}", "", "| key | type | base.yaml | per environment | what it does |",
                  "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in members]
        lines.append("")
    return "\n".join(lines)
