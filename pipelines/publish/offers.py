"""Hero offer rules (conf/offers.yaml), checked when they are loaded: a malformed rule
is refused at start-up with the offer and the key it names, in one line.

No pyspark import: the rules are plain data that the publish transforms turn into a
small DataFrame.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.config import read_yaml_mapping
from pipelines.errors import ConfigError

_LOCALE_OR_LANGUAGE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    headline: str = Field(min_length=1, max_length=200)
    url: str = Field(pattern=r"^https?://\S+$")
    priority: int = Field(description="lower wins when several offers apply")
    segments: tuple[str, ...] | None = Field(default=None, min_length=1)
    locales: tuple[str, ...] | None = Field(default=None, min_length=1)
    starts: date | None = None
    ends: date | None = None

    @field_validator("locales")
    @classmethod
    def _locales(cls, locales: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for locale in locales or ():
            if not _LOCALE_OR_LANGUAGE.match(locale):
                raise ValueError(f"'{locale}' is neither a locale (en-GB) nor a language (en)")
        return locales

    @model_validator(mode="after")
    def _dates_in_order(self) -> Offer:
        if self.starts and self.ends and self.ends < self.starts:
            raise ValueError(f"ends ({self.ends}) is before starts ({self.starts})")
        return self


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    offers: tuple[Offer, ...] = Field(min_length=1)


def parse_offers(document: Any, known_segments: Collection[str], source: str = "offers") -> tuple[Offer, ...]:
    """Offers from a parsed YAML document, by priority; segments must be ones the
    segment rules define."""
    if not isinstance(document, dict) or not isinstance(document.get("offers"), list):
        raise ConfigError(f"{source}: must hold an 'offers' list")
    for number, raw in enumerate(document["offers"], start=1):
        name = raw.get("id") if isinstance(raw, dict) else None
        where = f"offer '{name}'" if isinstance(name, str) else f"offer {number}"
        try:
            Offer.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(part) for part in first["loc"]) or "(the offer)"
            raise ConfigError(f"{source}: {where}: {key}: {first['msg']}") from None
    try:
        offers = _Document.model_validate(document).offers
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(f"{source}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    seen: dict[str, int] = {}
    for offer in offers:
        if offer.id in seen:
            raise ConfigError(f"{source}: offer '{offer.id}' is defined twice")
        seen[offer.id] = offer.priority
        unknown = [segment for segment in offer.segments or () if segment not in known_segments]
        if unknown:
            raise ConfigError(f"{source}: offer '{offer.id}': unknown segment '{unknown[0]}'; "
                              f"known: {', '.join(sorted(known_segments))}")
    priorities: dict[int, str] = {}
    for offer in offers:
        if offer.priority in priorities:
            raise ConfigError(f"{source}: offer '{offer.id}': priority {offer.priority} is already used by "
                              f"offer '{priorities[offer.priority]}'")
        priorities[offer.priority] = offer.id
    return tuple(sorted(offers, key=lambda offer: offer.priority))


def load_offers(path: str | Path, known_segments: Collection[str]) -> tuple[Offer, ...]:
    return parse_offers(read_yaml_mapping(Path(path), "offer rules"), known_segments, source=str(path))
