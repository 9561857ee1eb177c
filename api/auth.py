"""API keys: hashed, scoped, from an environment variable.

The variable secrets.api_tokens names (TAILOR_API_TOKENS) holds entries separated by
commas or whitespace, each `<key id>:<sha256 hex of the key>:<scope>+<scope>`:

    TAILOR_API_TOKENS="braze:9f86d0...0f00a08:content:read+traits:read ops:60303a...:admin"

(a scope holds a colon itself, so an entry splits on the first two colons only). Only
the hash is kept, in config and in memory; a request's key is hashed and looked up.
Clients send the key in api.key_header (X-Api-Key) or as `Authorization: Bearer <key>`.
`admin` holds every scope. Logs name the key id, never the key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, current_app, g, request

from api.errors import ApiError
from pipelines.config import API_SCOPES, Config
from pipelines.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_api_tokens(text: str | None, variable: str) -> dict[str, ApiKey]:
    """sha256 hex -> ApiKey. A malformed entry is a ConfigError naming its position, never its content."""
    keys: dict[str, ApiKey] = {}
    for position, entry in enumerate(re.split(r"[\s,]+", (text or "").strip()), start=1):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not parts[0] or not _HEX64.match(parts[1].lower()):
            raise ConfigError(f"{variable}: entry {position} is not <key id>:<sha256 hex>:<scope>+<scope>")
        scopes = frozenset(parts[2].split("+"))
        unknown = sorted(scopes - set(API_SCOPES))
        if unknown:
            raise ConfigError(f"{variable}: entry {position} ({parts[0]}) has unknown scope {unknown[0]!r}; "
                              f"scopes: {', '.join(API_SCOPES)}")
        keys[parts[1].lower()] = ApiKey(parts[0], scopes)
    return keys


def presented_key(header: str) -> str | None:
    key = request.headers.get(header)
    if key:
        return key
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def identify() -> None:
    """before_request: note the caller's key on g (None: no or unknown key); checking is the view's."""
    keys: dict[str, ApiKey] = current_app.extensions["tailor"]["api_keys"]
    key = presented_key(current_app.extensions["tailor"]["config"].api.key_header)
    g.api_key = keys.get(hash_key(key)) if key else None
    g.api_key_presented = key is not None


def require_scope(scope: str) -> Callable[[F], F]:
    if scope not in API_SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(view: F) -> F:
        @wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            api_key: ApiKey | None = g.get("api_key")
            if api_key is None:
                header = current_app.extensions["tailor"]["config"].api.key_header
                reason = "unknown API key" if g.get("api_key_presented") else f"an API key is required ({header})"
                raise ApiError(401, "unauthorized", reason, headers={"WWW-Authenticate": 'Bearer realm="tailor"'})
            if not api_key.allows(scope):
                raise ApiError(403, "forbidden", f"this key lacks the scope {scope}")
            return view(*args, **kwargs)

        checked.required_scope = scope  # type: ignore[attr-defined]
        return cast(F, checked)

    return decorate


def init_app(app: Flask, config: Config) -> None:
    variable = config.secrets.api_tokens
    app.extensions.setdefault("tailor", {})["api_keys"] = parse_api_tokens(config.secret("api_tokens"), variable)
    app.before_request(identify)
