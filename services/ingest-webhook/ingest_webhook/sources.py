"""The webhook sources, declared in one YAML file; secrets are read from the environment variables it names."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from platform_common.auth import validate_tenant

from .mapping import Mapping as EventMapping
from .mapping import TenantBinding
from .signatures import SCHEMES, secret_key

# a mapping may not choose the tenant: the source's binding does (see `tenant` in sources.yaml)
MAPPING_NAMES_TENANT = re.compile(r"""["']tenant["']\s*:""")


class SourceConfigError(Exception):
    """The sources file or a secret is unusable; its message is one line for stderr."""


@dataclass(frozen=True)
class Source:
    name: str
    scheme: str
    keys: tuple[bytes, ...]  # HMAC keys of every current secret (several during a rotation)
    tolerance_seconds: int
    max_body_bytes: int
    rate_limit: int
    rate_period: int
    mapping: EventMapping
    tenant: TenantBinding  # the tenant of every event of this source: fixed, or looked up from a signed field
    default_stream_id: str  # the stream of an event whose mapping names none
    dedup_seconds: int  # how long a delivery (or, for GitHub, a body) is remembered as seen


def secret_variables(declared: list[str]) -> list[str]:
    """The variables holding a source's secrets: those declared, each followed by its `<VAR>_NEXT` (rotation)."""
    variables: list[str] = []
    for var in declared:
        for name in (var, f"{var}_NEXT"):
            if name not in variables:
                variables.append(name)
    return variables


def check_tenant(name, where: str) -> str:
    """The tenant names keys may hold, never the reserved shared namespace (platform_common.auth)."""
    try:
        return validate_tenant(name if isinstance(name, str) else repr(name))
    except ValueError as e:
        raise SourceConfigError(f"{where}: {e}") from None


def _tenant_binding(name: str, declared) -> TenantBinding:
    """`tenant: acme`, or `tenant: {field: <JSONata>, allowed: {value: tenant} or [tenant, ...], absent: tenant}`."""
    where = f"source {name!r}: tenant"
    if isinstance(declared, str):
        return TenantBinding(fixed=check_tenant(declared, where))
    if not isinstance(declared, dict) or not declared.get("field") or not declared.get("allowed"):
        raise SourceConfigError(f"{where} must be a tenant name or {{field, allowed, absent?}} "
                                "(every source is bound to its tenants)")
    allowed = declared["allowed"]
    table = {str(v): v for v in allowed} if isinstance(allowed, list) else allowed
    if not isinstance(table, dict):
        raise SourceConfigError(f"{where}.allowed must be a list of tenants or a mapping value -> tenant")
    table = {str(k): check_tenant(v, f"{where}.allowed") for k, v in table.items()}
    absent = declared.get("absent")
    return TenantBinding(field=str(declared["field"]), allowed=table,
                         absent=check_tenant(absent, f"{where}.absent") if absent is not None else None)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_config(path: Path) -> dict:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SourceConfigError(f"cannot read the sources file {path}: {e}".replace("\n", " ")) from e
    if not isinstance(config, dict) or not isinstance(config.get("sources"), dict) or not config["sources"]:
        raise SourceConfigError(f"{path} declares no `sources`")
    return config


def _settings(config: dict, name: str) -> dict:
    declared = config["sources"][name]
    if not isinstance(declared, dict):
        raise SourceConfigError(f"source {name!r}: expected a mapping of settings")
    return {**(config.get("defaults") or {}), **declared}


def dev_secret(name: str, scheme: str) -> str:
    """A fixed development secret per source, so `make run` can print it once and clients can sign with it."""
    seed = hashlib.sha256(f"ingest-webhook development secret {name}".encode()).digest()[:24]
    if scheme == "standard-webhooks":
        return "whsec_" + base64.b64encode(seed).decode()
    return "dev_" + seed.hex()


def missing_dev_secrets(config: dict, environ: Mapping[str, str]) -> dict[str, str]:
    """Development secrets for every source whose required secret variable is unset: {variable: secret}."""
    missing = {}
    for name in config["sources"]:
        s = _settings(config, name)
        required = (s.get("secrets") or [None])[0]
        if required and not environ.get(required):
            missing[required] = dev_secret(name, s.get("scheme", "standard-webhooks"))
    return missing


def load_sources(path: Path, environ: Mapping[str, str]) -> dict[str, Source]:
    config = read_config(path)
    sources = {}
    for name in config["sources"]:
        s = _settings(config, name)
        scheme = s.get("scheme", "standard-webhooks")
        if scheme not in SCHEMES:
            raise SourceConfigError(f"source {name!r}: unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
        declared = s.get("secrets") or []
        if not declared:
            raise SourceConfigError(f"source {name!r}: no secret variable declared")
        if not environ.get(declared[0]):
            raise SourceConfigError(f"source {name!r}: secret variable {declared[0]} is unset "
                                    "(set it, or INGEST_DEV_SECRETS=1 for development secrets)")
        try:
            # each variable holds one secret, read as given: a secret may contain spaces (GitHub's own example
            # does); a rotation adds a variable (`<VAR>_NEXT` or another listed one), never a second word
            keys = tuple(dict.fromkeys(secret_key(scheme, environ[var]) for var in secret_variables(declared)
                                       if environ.get(var)))
        except ValueError as e:
            raise SourceConfigError(f"source {name!r}: a secret is malformed: {e}") from None
        if "mapping" not in s:
            raise SourceConfigError(f"source {name!r}: no `mapping`")
        if MAPPING_NAMES_TENANT.search(str(s["mapping"])):
            raise SourceConfigError(f"source {name!r}: the mapping names a tenant; bind the source with `tenant:` "
                                    "instead (a sender must not choose its tenant)")
        try:
            tenant = _tenant_binding(name, s.get("tenant"))
            rate = s.get("rate_limit") or {}
            scheme_window = int(float(s.get("dedup_window_days", 7)) * 86400) if scheme == "github" else 0
            sources[name] = Source(
                name=name, scheme=scheme, keys=keys,
                tolerance_seconds=int(s.get("tolerance_seconds", 300)),
                max_body_bytes=int(s.get("max_body_bytes", 262144)),
                rate_limit=int(rate.get("requests", 10000)), rate_period=int(rate.get("per_seconds", 1)),
                mapping=EventMapping(str(s["mapping"])), tenant=tenant,
                default_stream_id=str(s.get("default_stream_id") or name),
                # a signed timestamp bounds a replay to twice the tolerance; GitHub signs none, so its bodies
                # are remembered for days (GitHub redelivers up to 3 days back)
                dedup_seconds=scheme_window or 2 * int(s.get("tolerance_seconds", 300)))
        except SourceConfigError:
            raise
        except Exception as e:  # a JSONata syntax error or a bad number
            raise SourceConfigError(f"source {name!r}: {type(e).__name__}: {e}".replace("\n", " ")) from None
    return sources
