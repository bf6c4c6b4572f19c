"""The webhook sources, declared in one YAML file; secrets are read from the environment variables it names."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .mapping import Mapping as EventMapping
from .signatures import SCHEMES, secret_key


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
        variables = s.get("secrets") or []
        if not variables:
            raise SourceConfigError(f"source {name!r}: no secret variable declared")
        if not environ.get(variables[0]):
            raise SourceConfigError(f"source {name!r}: secret variable {variables[0]} is unset "
                                    "(set it, or INGEST_DEV_SECRETS=1 for development secrets)")
        try:
            keys = tuple(secret_key(scheme, secret) for var in variables
                         for secret in environ.get(var, "").split())
        except ValueError as e:
            raise SourceConfigError(f"source {name!r}: a secret is malformed: {e}") from None
        try:
            rate = s.get("rate_limit") or {}
            sources[name] = Source(
                name=name, scheme=scheme, keys=keys,
                tolerance_seconds=int(s.get("tolerance_seconds", 300)),
                max_body_bytes=int(s.get("max_body_bytes", 262144)),
                rate_limit=int(rate.get("requests", 10000)), rate_period=int(rate.get("per_seconds", 1)),
                mapping=EventMapping(str(s["mapping"])))
        except KeyError:
            raise SourceConfigError(f"source {name!r}: no `mapping`") from None
        except Exception as e:  # a JSONata syntax error or a bad number
            raise SourceConfigError(f"source {name!r}: {type(e).__name__}: {e}".replace("\n", " ")) from None
    return sources
