"""Benchmark of enrich against the running stack; prints one markdown section for BENCHMARKS.md.

- Quality through the running service (local backend): CoNLL-2003 en test sentences and SST-2 test sentences go
  through Kafka as text events; the enriched records' entity spans and polarities are scored (seqeval; accuracy).
- Quality of the encoder on every test split (model card's figures), on ONNX Runtime and on Triton (en), and the old
  rules + VADER as the baseline, in the same run.
- Throughput end to end through Kafka: text events (both models on every text) and the demo's mix (metric-only
  events skip the models), with `local` and with `triton` (nvidia-pytriton's Triton Inference Server 2.51 serving
  deploy/triton); CPU per text event; encoder request latency per backend.

Run: .venv/bin/python services/enrich/bench.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from enrich.client import CircuitBreaker, LocalBackend, ModelClient, TritonBackend
from enrich.datasets import read_conll, read_sst2
from enrich.evaluation import accuracy, encoder_ner, full_report, joined, seqeval_scores, tags_from_spans
from enrich.models import get_model
from enrich.testing import REPO, EnrichProcess, raw_event, running_triton
from platform_common.kafka import RAW, Publisher, ensure_topics
from platform_common.settings import CommonSettings

SETTINGS = CommonSettings(service_name="enrich-bench")
# realistic short texts of the demo's kind, cycled for the throughput runs
TEXTS = [
    "The new Acme Router X200 is fantastic, setup took five minutes and the speed doubled.",
    "I was charged 250 EUR twice for order 1123 and nobody at Globex answers my emails. Terrible service.",
    "Delivery to Berlin was late by 3 days, the package was fine though.",
    "Tim Cook said Apple will ship the iPhone 15 Pro in Paris on March 3, 2025 for $999. Great news, up 12%!",
]
DEMO_TEXT_SHARE = 0.1  # the demo posts a few text events among thousands of metric readings; 10% is generous


def metric_event(i: int) -> dict:
    e = raw_event({}, stream_id=f"metrics-{i % 50}")
    e["metrics"] = {"value": float(i % 97)}
    return e


def read_output(topic: str, expected: int, timeout: float) -> tuple[list[dict], float]:
    """The records of `topic` (decoded) and the seconds between the first and last record's timestamps."""
    consumer = Consumer({"bootstrap.servers": SETTINGS.kafka_bootstrap_servers, "group.id": f"bench-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(SETTINGS.kafka_partitions)])
    decode = AvroDeserializer(SchemaRegistryClient({"url": SETTINGS.schema_registry_url}))
    out, first, last = [], None, None
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                ts = msg.timestamp()[1] / 1000
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
                out.append(decode(msg.value(), SerializationContext(topic, MessageField.VALUE)))
    finally:
        consumer.close()
    return out, (last - first) if len(out) > 1 else float("nan")


async def prepublish(topic: str, events: list[dict]) -> None:
    publisher = Publisher(SETTINGS, linger_ms=20)
    await publisher.start()
    try:
        await ensure_topics(SETTINGS, [topic])
        for start in range(0, len(events), 1000):
            await asyncio.gather(*(publisher.publish(topic, e["stream_id"], e, schema_of=RAW)
                                   for e in events[start:start + 1000]))
    finally:
        await publisher.stop()


def through_service(events: list[dict], workdir: Path, **env: str) -> tuple[list[dict], float, tuple[float, float]]:
    """Pre-fills the raw topic, starts one `python -m enrich`, reads every output; returns the outputs, events/s and
    CPU ms per event (service process, model workers)."""
    service = EnrichProcess(f"bench{uuid.uuid4().hex[:8]}", workdir, **env)
    asyncio.run(prepublish(service.input, events))
    service.start()
    try:
        proc = psutil.Process(service.proc.pid)
        before = cpu_seconds(proc)
        out, seconds = read_output(service.output, len(events), timeout=300)
        after = cpu_seconds(proc)
    finally:
        service.stop()
        service.cleanup()
    cpu = tuple((a - b) * 1000 / max(len(out), 1) for a, b in zip(after, before, strict=True))
    return out, (len(out) / seconds if seconds else float("nan")), cpu


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    own = sum(proc.cpu_times()[:2])
    return own, sum(sum(c.cpu_times()[:2]) for c in proc.children(recursive=True))


def quality_through_service(workdir: Path) -> dict:
    """CoNLL en test and SST-2 test through Kafka and the running service (default backend)."""
    conll = read_conll("en", "test")
    sst2 = read_sst2("test")
    events, expect = [], {}
    for i, (words, tags) in enumerate(conll):
        text, spans = joined(words)
        e = raw_event({"body": text}, stream_id=f"conll-{i % 20}")
        events.append(e)
        expect[e["event_id"]] = ("ner", tags, spans)
    for i, (text, label) in enumerate(sst2):
        e = raw_event({"body": text}, stream_id=f"sst2-{i % 20}")
        events.append(e)
        expect[e["event_id"]] = ("sst2", label, None)
    out, rate, _ = through_service(events, workdir)
    gold, pred, sgold, spred, statuses = [], [], [], [], {}
    for value in out:
        kind, truth, spans = expect[value["event_id"]]
        statuses[value["enrichment_status"]] = statuses.get(value["enrichment_status"], 0) + 1
        if kind == "ner":
            gold.append(truth)
            pred.append(tags_from_spans(spans, value["entities"]))
        else:
            sgold.append(truth)
            # a text not enriched (e.g. detected as another language) counts as wrong
            spred.append(int(bool(value["sentiment"]) and value["sentiment"][0]["polarity"] == "positive"))
    return {"ner_en": seqeval_scores(gold, pred), "sst2_test_accuracy": accuracy(sgold, spred),
            "records": len(out), "sent": len(events), "statuses": statuses, "events_per_s": rate}


async def latency(backend: str, url: str | None) -> dict[int, list[float]]:
    impl = LocalBackend("text", workers=1) if backend == "local" else TritonBackend("text", url)
    client = ModelClient("text", impl, max_batch=256, max_wait_s=0, inflight=1, timeout_s=30,
                         breaker=CircuitBreaker(5, 5))
    await client.start()
    out = {}
    try:
        for size in (1, 64):
            texts = [TEXTS[i % len(TEXTS)] for i in range(size)]
            samples = []
            for _ in range(60 if size == 1 else 15):
                started = time.perf_counter()
                await client.predict(texts)
                samples.append((time.perf_counter() - started) * 1000)
            out[size] = samples
    finally:
        await client.close()
    return out


async def triton_ner(model, url: str) -> dict:
    """The encoder on Triton, scored on CoNLL en test (the evaluation calls it from a thread)."""
    backend = TritonBackend("text", url)
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.to_thread(encoder_ner, model, read_conll("en", "test"),
                                       lambda p: asyncio.run_coroutine_threadsafe(backend.run(p), loop).result(60))
    finally:
        await backend.close()


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def quantization() -> str:
    """What the served artifact is, from its scores.json (the export's choice)."""
    from enrich.models.transformer import artifact_dir
    scores = artifact_dir() / "scores.json"
    chosen = json.loads(scores.read_text())["validation"].get("chosen", "") if scores.exists() else ""
    return {"int8-token": "int8 ONNX, activations scaled per token",
            "int8": "int8 ONNX, activations scaled per request", "fp32": "fp32 ONNX"}.get(chosen, "ONNX")


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()


def main() -> None:
    model = get_model("text").encoder
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        service_quality = quality_through_service(tmp)
        loads.append(os.getloadavg()[0])
        report = full_report("test", None, baseline=True, model=model)
        text_events = [raw_event({"body": TEXTS[i % len(TEXTS)]}, stream_id=f"s-{i % 50}") for i in range(6000)]
        every = round(1 / DEMO_TEXT_SHARE)
        mix = [raw_event({"body": TEXTS[i % len(TEXTS)]}, stream_id=f"s-{i % 50}") if i % every == 0
               else metric_event(i) for i in range(20000)]
        rows = []
        _, rate, cpu = through_service(text_events, tmp)
        rows.append(("local (ONNX Runtime in a worker process)", "text events, both models on each", len(text_events),
                     rate, cpu))
        loads.append(os.getloadavg()[0])
        _, rate, mcpu = through_service(mix, tmp)
        rows.append(("local (ONNX Runtime in a worker process)", f"demo mix ({DEMO_TEXT_SHARE:.0%} text)", len(mix),
                     rate, mcpu))
        with running_triton(tmp) as url:
            _, rate, tcpu = through_service(text_events, tmp, ENRICH_BACKEND="triton", ENRICH_TRITON_URL=url)
            rows.append(("triton (Triton 2.51 of nvidia-pytriton, ONNX Runtime in its Python backend)",
                         "text events, both models on each", len(text_events), rate, tcpu))
            loads.append(os.getloadavg()[0])
            remote_en = asyncio.run(triton_ner(model, url))
            lat = {"local": asyncio.run(latency("local", None)), "triton": asyncio.run(latency("triton", url))}

    ner, s, base = report["ner"], report["sentiment"], report["baseline"]
    print("## enrich\n")
    print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit()}, model "
          f"`{report['model']}` ({quantization()}), 2 shared cores (1-min load average during the runs: "
          f"{', '.join(f'{x:.1f}' for x in loads)}). Server behind each row: `local` = ONNX Runtime in enrich's "
          f"worker process; `triton` = Triton Inference Server 2.51 from nvidia-pytriton 0.7.0 on this machine.\n")
    print("Quality (test splits, evaluated once per model version; seqeval entity F1, default mode):\n")
    print("| what | server | en | de | es | nl | target |\n|---|---|---|---|---|---|---|")
    print(f"| entity F1, encoder on CoNLL tokens | local | {ner['en']['f1']:.4f} | {ner['de']['f1']:.4f} | "
          f"{ner['es']['f1']:.4f} | {ner['nl']['f1']:.4f} | en >= 0.88 |")
    print(f"| entity F1, encoder on CoNLL tokens | triton | {remote_en['f1']:.4f} | | | | |")
    sq = service_quality
    print(f"| entity F1, through the running service (sentences joined by spaces, spans mapped to words) | local | "
          f"{sq['ner_en']['f1']:.4f} | | | | en >= 0.88 |")
    print(f"| baseline: old rules + gazetteers | local | {base['ner_rules']['en']['f1']:.4f} | | | | |")
    print("\nEntity F1 per type, en: " + ", ".join(f"{k} {v:.4f}" for k, v in ner["en"]["per_type"].items()) + ".\n")
    print("| sentiment | encoder (local) | through the running service | baseline VADER | target |\n"
          "|---|---|---|---|---|")
    print(f"| SST-2 test accuracy (polarity) | {s['sst2_test_accuracy']:.4f} | {sq['sst2_test_accuracy']:.4f} | "
          f"{base['sentiment_vader']['sst2_test_accuracy']:.4f} | >= 0.88 |")
    print(f"| TweetEval val macro recall (3 classes), the 570 tweets not in XLM-T English train | "
          f"{s['tweeteval_val_unseen_macro_recall']:.4f} | | "
          f"{base['sentiment_vader']['tweeteval_val_unseen_macro_recall']:.4f} | |")
    print(f"| TweetEval val macro recall, all 2,000 (1,430 in XLM-T English train: not a clean figure) | "
          f"{s['tweeteval_val_macro_recall']:.4f} | | {base['sentiment_vader']['tweeteval_val_macro_recall']:.4f} | |")
    print("\nXLM-T val macro recall: " + ", ".join(f"{k.split('_')[1]} {v:.4f}" for k, v in s.items()
                                                   if k.startswith("xlmt_")) + ".")
    print(f"Records through the service: {sq['records']}/{sq['sent']}, statuses {json.dumps(sq['statuses'])}.\n")
    print("Throughput end to end through Kafka (raw topic pre-filled, one `python -m enrich`, rate between the first "
          "and last enriched record):\n")
    print("| backend | events | count | events/s | CPU ms/event service + workers | target |\n"
          "|---|---|---|---|---|---|")
    targets = {"text events, both models on each": ">= 500/s (local)",
               f"demo mix ({DEMO_TEXT_SHARE:.0%} text)": ">= 2,000/s"}
    for backend, kind, n, rate, cpu in rows:
        print(f"| {backend} | {kind} | {n} | {rate:,.0f} | {cpu[0]:.2f} + {cpu[1]:.2f} | {targets.get(kind, '')} |")
    print("\nEncoder request latency (ms) through the client (micro-batcher, timeout, breaker), tokenization and "
          "decoding included:\n")
    print("| backend | texts/request | p50 | p95 | p99 |\n|---|---|---|---|---|")
    for backend, by_size in lat.items():
        for size, samples in by_size.items():
            print(f"| {backend} | {size} | {pct(samples, 50):.2f} | {pct(samples, 95):.2f} | {pct(samples, 99):.2f} |")
    print("\n`.venv/bin/python services/enrich/bench.py`")


if __name__ == "__main__":
    sys.exit(main())
