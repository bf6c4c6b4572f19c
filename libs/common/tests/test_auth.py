"""platform_common.auth: keys bound to tenants and roles, JSON errors, and the matrix generated from routes."""

import json

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from platform_common.auth import RESERVED_TENANT, KeyStore, Principal, install_auth, make_key, require
from support.authz import Keys, authz_cases, check, concrete


def app_with(keys: KeyStore) -> FastAPI:
    app = FastAPI()
    install_auth(app, keys)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {}

    @app.get("/things/{thing}")
    async def read(thing: str, who: Principal = Depends(require("read"))) -> dict:
        return {"tenant": who.tenant, "thing": thing}

    @app.post("/things")
    async def write(who: Principal = Depends(require("write"))) -> dict:
        return {"tenant": who.tenant}

    @app.delete("/things/{thing}")
    async def delete(thing: str, who: Principal = Depends(require("admin"))) -> dict:
        return {}

    return app


def test_matrix_over_the_route_table():
    keys = Keys.create()
    client = TestClient(app_with(keys.store))
    cases = authz_cases(client.app, keys, public={"/healthz"})
    assert {c.credential for c in cases} == {"none", "wrong", "right", "other_tenant", "weaker_role"}
    for case in cases:
        headers = {"Authorization": f"Bearer {case.token}"} if case.token else {}
        response = client.request(case.method, concrete(case.path), headers=headers)
        check(response.status_code, response.json(), case)
    assert client.get("/healthz").status_code == 200


def test_a_route_without_policy_fails_the_matrix():
    app = app_with(Keys.create().store)

    @app.get("/forgotten")
    async def forgotten() -> dict:
        return {}

    with pytest.raises(AssertionError, match="/forgotten has no authorization policy"):
        authz_cases(app, Keys.create(), public={"/healthz"})


def test_the_tenant_comes_from_the_key(monkeypatch):
    token, entry = make_key("acme", ["read"])
    monkeypatch.setenv("API_KEYS", json.dumps([entry]))
    client = TestClient(app_with(KeyStore.from_env()))
    answer = client.get("/things/1", headers={"Authorization": f"Bearer {token}"})
    assert answer.json() == {"tenant": "acme", "thing": "1"}
    refused = client.get("/things/1", headers={"Authorization": "Bearer pk_nope_" + "x" * 40})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"


def test_file_keys_rotate_and_reserved_tenant_is_refused(tmp_path):
    old, old_entry = make_key("acme", ["write"])
    new, new_entry = make_key("acme", ["write"])
    path = tmp_path / "keys.yaml"
    path.write_text(json.dumps([old_entry, new_entry]))
    store = KeyStore.from_env({"API_KEYS_FILE": str(path)})
    assert store.authenticate(old).tenant == store.authenticate(new).tenant == "acme"
    with pytest.raises(ValueError, match="invalid tenant"):
        make_key(RESERVED_TENANT, ["read"])
    with pytest.raises(ValueError, match="listed twice"):
        KeyStore.from_entries([old_entry, old_entry])
