import pytest

from platform_common.avro import load_schema


def test_a_suffixed_copy_of_a_contract_topic_carries_its_schema():
    assert load_schema("events.raw.v1.test-1234").raw_schema == load_schema("events.raw.v1").raw_schema
    assert load_schema("anomalies.v1.staging").name == "platform.anomalies.v1.AnomalyAlert"


def test_an_unknown_topic_has_no_schema():
    with pytest.raises(KeyError, match="no Avro schema for topic 'events.raw'"):
        load_schema("events.raw")
