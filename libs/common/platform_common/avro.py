"""Avro in the Confluent wire format (magic byte, 4-byte schema id, Avro binary) against the schema registry.

Schemas are the `.avsc` files in `schemas/`, one per topic, registered under `<topic>-value`.
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from pathlib import Path
from typing import cast

from schema_registry.client import AsyncSchemaRegistryClient, schema
from schema_registry.client.errors import ClientError
from schema_registry.serializers import AsyncAvroMessageSerializer

SCHEMA_DIR = Path(__file__).with_name("schemas")


class SchemaRegistrationError(RuntimeError):
    """The registry refused one of our schemas (for example an incompatible change)."""


def subject(topic: str) -> str:
    return f"{topic}-value"


def topics_with_schemas() -> list[str]:
    return sorted(p.name.removesuffix(".avsc") for p in SCHEMA_DIR.glob("*.avsc"))


@cache
def load_schema(topic: str) -> schema.AvroSchema:
    """The schema of a contract topic; a topic named `<contract topic>.<suffix>` (a test's or an environment's
    copy of it) carries its contract topic's schema."""
    contract = topic if (SCHEMA_DIR / f"{topic}.avsc").exists() else max(
        (t for t in topics_with_schemas() if topic.startswith(t + ".")), key=len, default=None)
    if contract is None:
        raise KeyError(f"no Avro schema for topic {topic!r} in {SCHEMA_DIR}")
    return schema.AvroSchema(json.loads((SCHEMA_DIR / f"{contract}.avsc").read_text()))


class AvroSerde:
    """Encodes and decodes topic values; schema ids are cached, so the registry is asked once per schema."""

    def __init__(self, registry_url: str):
        self.client = AsyncSchemaRegistryClient(url=registry_url)
        self._serializer = AsyncAvroMessageSerializer(self.client)
        self._ids: dict[str, int] = {}
        self._lock = asyncio.Lock()  # one registration per topic, not one per concurrent first send

    async def register(self, topic: str, schema_of: str | None = None) -> int:
        """Registers the schema of `schema_of` (default: `topic` itself) under `<topic>-value`; a topic that is a
        renamed copy of a contract topic (a test's, a new environment's) names the contract topic here."""
        if topic in self._ids:
            return self._ids[topic]
        async with self._lock:
            if topic not in self._ids:
                try:
                    self._ids[topic] = await self.client.register(subject(topic), load_schema(schema_of or topic))
                except ClientError as e:
                    raise SchemaRegistrationError(f"registry refused the schema of {topic}: {e.message}") from e
        return self._ids[topic]

    async def encode(self, topic: str, record: dict, schema_of: str | None = None) -> bytes:
        schema_id = await self.register(topic, schema_of)
        return await self._serializer.encode_record_with_schema_id(schema_id, record)

    async def decode(self, data: bytes) -> dict:
        # None comes back only for a None message; bytes decode to a record or raise
        return cast(dict, await self._serializer.decode_message(data))


async def register_schemas(registry_url: str, topics: list[str] | None = None) -> dict[str, int]:
    serde = AvroSerde(registry_url)
    return {t: await serde.register(t) for t in topics or topics_with_schemas()}
