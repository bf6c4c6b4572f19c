"""A text event posted at the front door is enriched within 2 s on an idle stack (issue: enrich)."""

import time

import httpx
from support.platform import Sender

from platform_common.testing import decode_avro, read_messages


def test_posted_text_event_is_enriched_within_two_seconds(start_platform, settings, run_id):
    platform = start_platform(("ingest-webhook", "enrich"))
    text = "Terrible service from Acme Corp: I was charged 250 EUR twice in Berlin and nobody helps. Awful!"
    sender = Sender(platform.ports["ingest-webhook"])
    with httpx.Client(timeout=10) as client:
        sender.post(client, {"id": f"warm-{run_id}", "stream": "reviews", "text": "warm-up"}, attempts=1)
        read_messages(settings, platform.topics["events.enriched.v1"], 1, timeout=30)
        posted_ms = time.time() * 1000
        assert sender.post(client, {"id": f"review-{run_id}", "stream": "reviews", "text": text}, attempts=1) == 202
    messages = read_messages(settings, platform.topics["events.enriched.v1"], 2, timeout=30)
    [msg] = [m for m in messages if decode_avro(settings, m)["event_id"] == f"review-{run_id}"]
    # the enriched record's broker timestamp (producer create time) against the moment the webhook was posted
    assert msg.timestamp()[1] - posted_ms < 2000
    event = decode_avro(settings, msg)
    found = {(e["label"], e["model"]) for e in event["entities"]}
    # entities of the fine-tuned encoder, money from the patterns; each names its model
    assert {("ORG", "minilm-multitask"), ("LOCATION", "minilm-multitask"), ("MONEY", "pattern-gazetteer-ner")} <= found
    for entity in event["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]
    [sentiment] = event["sentiment"]
    assert (sentiment["label"], sentiment["polarity"], sentiment["model"]) == ("negative", "negative", "minilm-multitask")
    assert -1 <= sentiment["score"] < 0
    assert event["languages"] == {"body": "en"}
    assert {(m["task"], m["name"]) for m in event["models"]} >= {("ner", "minilm-multitask"),
                                                                  ("sentiment", "minilm-multitask")}
    assert all(m["version"] for m in event["models"])
