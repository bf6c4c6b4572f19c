"""`python -m platform_common register-schemas`: registers every topic's schema, BACKWARD compatibility.
`python -m platform_common new-api-key --tenant T --roles read,write [--id ID]`: prints a new API key and the
configuration entry (for `API_KEYS` / `API_KEYS_FILE`) that accepts it."""

import argparse
import asyncio
import json
import sys

import httpx

from .avro import SchemaRegistrationError, register_schemas
from .settings import CommonSettings


async def register(url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.put(f"{url}/config", json={"compatibility": "BACKWARD"})).raise_for_status()
    ids = await register_schemas(url)
    print("registered " + ", ".join(f"{t} (id {i})" for t, i in ids.items()))


def new_api_key(args: list[str]) -> int:
    from .auth import ROLES, make_key

    parser = argparse.ArgumentParser(prog="python -m platform_common new-api-key")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--roles", default="read", help=f"comma-separated, of {', '.join(ROLES)}")
    parser.add_argument("--id", default=None, help="key id (default: random)")
    opts = parser.parse_args(args)
    try:
        token, entry = make_key(opts.tenant, opts.roles.split(","), opts.id)
    except ValueError as e:
        print(f"new-api-key: {e}", file=sys.stderr)
        return 2
    print(f"token (give it to the client; it is not stored): {token}")
    print(f"entry (add it to API_KEYS or API_KEYS_FILE): {json.dumps(entry)}")
    return 0


def main(argv: list[str]) -> int:
    if argv[1:2] == ["new-api-key"]:
        return new_api_key(argv[2:])
    if argv[1:] != ["register-schemas"]:
        print("usage: python -m platform_common register-schemas | new-api-key --tenant T --roles read,write",
              file=sys.stderr)
        return 2
    url = CommonSettings().schema_registry_url
    try:
        asyncio.run(register(url))
    except SchemaRegistrationError as e:
        print(f"schemas: {e}; make the change backward compatible or publish a new topic version", file=sys.stderr)
        return 1
    except httpx.HTTPStatusError as e:
        print(f"schemas: the schema registry at {url} answered {e.response.status_code} to {e.request.method} "
              f"{e.request.url.path}; check that SCHEMA_REGISTRY_URL is its Confluent API "
              "(Apicurio: http://<host>:8081/apis/ccompat/v7)", file=sys.stderr)
        return 1
    except httpx.HTTPError as e:
        print(f"schemas: schema registry at {url} is unreachable ({e}); run `make up` or set SCHEMA_REGISTRY_URL",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
