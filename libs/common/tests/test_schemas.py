"""Every topic's schema stays backward compatible with its last released version (the registry decides)."""

import json

import httpx
import pytest

from platform_common.avro import SCHEMA_DIR, AvroSerde, SchemaRegistrationError, topics_with_schemas

RELEASED = SCHEMA_DIR / "released"


async def compatible(settings, subject: str, released: dict, candidate: dict) -> bool:
    url = settings.schema_registry_url
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.put(f"{url}/config/{subject}", json={"compatibility": "BACKWARD"})).raise_for_status()
        (await client.post(f"{url}/subjects/{subject}/versions", json={"schema": json.dumps(released)})
         ).raise_for_status()
        answer = await client.post(f"{url}/compatibility/subjects/{subject}/versions/latest",
                                   json={"schema": json.dumps(candidate)})
        answer.raise_for_status()
        return answer.json()["is_compatible"]


def test_every_topic_has_a_schema_and_a_released_version():
    assert topics_with_schemas() == sorted(p.name.removesuffix(".avsc") for p in RELEASED.glob("*.avsc"))
    assert {"events.raw.v1", "events.enriched.v1", "anomalies.v1", "events.contextualized.v1", "documents.v1",
            "reports.v1", "notifications.v1"} <= set(topics_with_schemas())


@pytest.mark.parametrize("topic", topics_with_schemas())
async def test_schema_is_backward_compatible_with_released(settings, run_id, topic):
    released = json.loads((RELEASED / f"{topic}.avsc").read_text())
    current = json.loads((SCHEMA_DIR / f"{topic}.avsc").read_text())
    assert await compatible(settings, f"compat-{run_id}-{topic}", released, current), (
        f"{topic}.avsc is not backward compatible with its released version: add defaults to new fields, "
        "or publish a new topic version")


async def test_the_check_catches_an_incompatible_change(settings, run_id):
    released = json.loads((RELEASED / "events.raw.v1.avsc").read_text())
    broken = {**released, "fields": [*released["fields"], {"name": "priority", "type": "int"}]}  # no default
    assert not await compatible(settings, f"compat-{run_id}-broken", released, broken)


async def test_registry_refusal_is_a_clear_error(settings, run_id):
    topic = f"compat-{run_id}-refused"
    async with httpx.AsyncClient(timeout=10) as client:
        url = settings.schema_registry_url
        await client.put(f"{url}/config/{topic}-value", json={"compatibility": "BACKWARD"})
        await client.post(f"{url}/subjects/{topic}-value/versions",
                          json={"schema": json.dumps({"type": "record", "name": "X", "fields": [
                              {"name": "a", "type": "string"}]})})
    serde = AvroSerde(settings.schema_registry_url)
    with pytest.raises(SchemaRegistrationError, match=f"registry refused the schema of {topic}"):
        await serde.register(topic, schema_of="events.raw.v1")
