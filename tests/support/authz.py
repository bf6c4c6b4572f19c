"""The authorization matrix, generated from an app's route table: a route added without a policy fails it."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from platform_common.auth import ROLES, KeyStore, api_routes, make_key, route_role


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    credential: str  # none | wrong | other_tenant | weaker_role | right
    token: str | None
    expect: str  # "401", "403" or "allowed" (any status but 401/403)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} [{self.credential}]"


@dataclass
class Keys:
    """One key per role for tenant `a`, one admin key for tenant `b`; `store` accepts them all."""
    tokens: dict[str, str]
    store: KeyStore

    @classmethod
    def create(cls) -> Keys:
        entries, tokens = [], {}
        for role in ROLES:
            tokens[role], entry = make_key("tenant-a", [role], key_id=f"a{role}")
            entries.append(entry)
        tokens["other_tenant"], entry = make_key("tenant-b", ["admin"], key_id="badmin")
        entries.append(entry)
        return cls(tokens, KeyStore.from_entries(entries))


def authz_cases(app: FastAPI, keys: Keys, public: set[str]) -> list[Case]:
    """Every route × {no credential, a wrong key, a key of a weaker role, the right key}. The other tenant's key is
    authenticated too (tenancy is checked on the data, by the leak tests), so it is expected to pass the gate."""
    cases: list[Case] = []
    for route in api_routes(app):
        role = route_role(route)
        if role is None:
            if route.path not in public:
                raise AssertionError(f"{sorted(route.methods)} {route.path} has no authorization policy: "
                                     "add Depends(require(<role>)) or list it as public")
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            wrong = keys.tokens[role][:-4] + "xxxx"
            cases += [Case(method, route.path, "none", None, "401"),
                      Case(method, route.path, "wrong", wrong, "401"),
                      Case(method, route.path, "right", keys.tokens[role], "allowed"),
                      Case(method, route.path, "other_tenant", keys.tokens["other_tenant"], "allowed")]
            if role != "read":
                weaker = ROLES[ROLES.index(role) - 1]
                cases.append(Case(method, route.path, "weaker_role", keys.tokens[weaker], "403"))
    return cases


def concrete(path: str) -> str:
    """A request path for a route template: every `{param}` becomes a placeholder value."""
    import re

    return re.sub(r"\{[^}]+\}", "x", path)


def check(status: int, body: dict | None, case: Case) -> None:
    if case.expect == "allowed":
        assert status not in (401, 403), f"{case.id}: {status} {body}"
    else:
        assert status == int(case.expect), f"{case.id}: expected {case.expect}, got {status} {body}"
        assert body and set(body) >= {"error", "detail"}, f"{case.id}: body {body}"
