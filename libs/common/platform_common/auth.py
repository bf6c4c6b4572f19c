"""Bearer API keys bound to a tenant and roles, for every HTTP API of the platform.

A token is `pk_<key_id>_<secret>`. Configuration holds only its SHA-256 (`API_KEYS` as a JSON list, or `API_KEYS_FILE`
pointing at a YAML/JSON file such as a mounted Secret), so a leaked configuration grants nothing. Keys carry 256 bits
of randomness, so a fast hash is enough: no password-style stretching is needed. Rotation: add the new entry, move
clients over, remove the old entry.

Routes declare their policy with `Depends(require("read"))`; `route_role` reads that policy back, so the
authorization matrix test is generated from the route table and a route without a policy fails it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

ROLES = ("read", "write", "admin")  # each implies the ones before it
RESERVED_TENANT = "_shared"  # shared reference documents: no key and no webhook source may hold it
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TOKEN = re.compile(r"^pk_([A-Za-z0-9]{4,32})_([A-Za-z0-9_-]{16,128})$")


class AuthError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    roles: frozenset[str]

    def can(self, role: str) -> bool:
        return any(ROLES.index(r) >= ROLES.index(role) for r in self.roles)


@dataclass(frozen=True)
class KeyEntry:
    id: str
    tenant: str
    roles: frozenset[str]
    sha256: str


def validate_tenant(tenant: str) -> str:
    """A tenant a key or a webhook source may hold: a short slug, never the reserved shared namespace."""
    if tenant == RESERVED_TENANT or not TENANT_PATTERN.match(tenant):
        raise ValueError(f"invalid tenant {tenant!r}: a lowercase slug (a-z, 0-9, _ and -), not {RESERVED_TENANT!r}")
    return tenant


def _entry(raw: dict[str, Any]) -> KeyEntry:
    try:
        roles = frozenset(raw["roles"])
        entry = KeyEntry(id=str(raw["id"]), tenant=validate_tenant(str(raw["tenant"])), roles=roles,
                         sha256=str(raw["sha256"]).lower())
    except KeyError as e:
        raise ValueError(f"API key entry {raw.get('id', '?')!r} lacks {e.args[0]!r}") from None
    if not roles or not roles <= set(ROLES):
        raise ValueError(f"API key {entry.id!r}: roles must be a non-empty subset of {ROLES}")
    if not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
        raise ValueError(f"API key {entry.id!r}: sha256 must be 64 hex digits")
    return entry


@dataclass
class KeyStore:
    entries: dict[str, KeyEntry] = field(default_factory=dict)

    @classmethod
    def from_entries(cls, raw: Iterable[dict[str, Any]]) -> KeyStore:
        store = cls()
        for item in raw:
            entry = _entry(item)
            if entry.id in store.entries:
                raise ValueError(f"API key id {entry.id!r} is listed twice")
            store.entries[entry.id] = entry
        return store

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> KeyStore:
        """`API_KEYS` (a JSON list) and `API_KEYS_FILE` (YAML or JSON list); both may be set, ids must not repeat."""
        env = os.environ if environ is None else environ
        raw: list[dict[str, Any]] = []
        if env.get("API_KEYS"):
            raw += json.loads(env["API_KEYS"])
        if env.get("API_KEYS_FILE"):
            import yaml  # YAML is a superset of JSON, so either file format loads

            raw += yaml.safe_load(Path(env["API_KEYS_FILE"]).read_text()) or []
        return cls.from_entries(raw)

    def authenticate(self, token: str) -> Principal:
        match = _TOKEN.match(token)
        entry = self.entries.get(match.group(1)) if match else None
        digest = hashlib.sha256(token.encode()).hexdigest()
        # compared even when the id is unknown, so the answer takes the same time either way
        if not hmac.compare_digest(digest, entry.sha256 if entry else "0" * 64) or entry is None:
            raise AuthError(401, "unauthorized", "the API key is not valid")
        return Principal(entry.id, entry.tenant, entry.roles)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make_key(tenant: str, roles: Iterable[str], key_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """A new token and the configuration entry that accepts it (the token itself is never stored)."""
    key_id = key_id or secrets.token_hex(6)
    token = f"pk_{key_id}_{secrets.token_urlsafe(32)}"
    entry = {"id": key_id, "tenant": tenant, "roles": sorted(roles), "sha256": hash_token(token)}
    _entry(entry)  # the same checks as a configured key
    return token, entry


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, if its key holds `role` (or a higher one)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    async def principal(request: Request) -> Principal:
        token = bearer_token(request)
        if token is None:
            raise AuthError(401, "unauthorized", "an API key is required: Authorization: Bearer pk_...")
        store: KeyStore = request.app.state.api_keys
        who = store.authenticate(token)
        if not who.can(role):
            raise AuthError(403, "forbidden", f"this key lacks the {role!r} role")
        request.state.principal = who
        return who

    principal.__platform_role__ = role  # type: ignore[attr-defined]  # read back by route_role
    return principal


def api_routes(app: FastAPI) -> Iterator[Any]:
    """The app's API routes with their full paths and dependencies. FastAPI 0.137+ keeps an included router as one
    unflattened entry of `app.routes` and resolves it through `iter_route_contexts`; older versions flatten it."""
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in iter_route_contexts(app.routes) if iter_route_contexts else app.routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def route_role(route: APIRoute) -> str | None:
    """The role `route` requires through `require(...)`, or None for a route with no such dependency."""
    pending = list(route.dependant.dependencies)
    while pending:
        dep = pending.pop()
        role = getattr(dep.call, "__platform_role__", None)
        if role:
            return str(role)
        pending.extend(dep.dependencies)
    return None


async def _auth_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=headers)


def install_auth(app: FastAPI, keys: KeyStore | None = None) -> KeyStore:
    """Loads the key store onto `app` (from the environment unless given) and answers auth failures as JSON."""
    store = keys if keys is not None else KeyStore.from_env()
    app.state.api_keys = store
    app.add_exception_handler(AuthError, _auth_error)
    return store
