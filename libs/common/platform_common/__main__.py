"""`python -m platform_common register-schemas`: registers every topic's schema, BACKWARD compatibility."""

import asyncio
import sys

import httpx

from .avro import SchemaRegistrationError, register_schemas
from .settings import CommonSettings


async def register(url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.put(f"{url}/config", json={"compatibility": "BACKWARD"})).raise_for_status()
    ids = await register_schemas(url)
    print("registered " + ", ".join(f"{t} (id {i})" for t, i in ids.items()))


def main(argv: list[str]) -> int:
    if argv[1:] != ["register-schemas"]:
        print("usage: python -m platform_common register-schemas", file=sys.stderr)
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
