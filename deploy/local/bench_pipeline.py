"""End-to-end benchmark of the pipeline: signed webhooks through ingest-webhook, enrich, anomaly, notify and rag, as
processes against the running stack, on per-run topics; prints one markdown section.

    .venv/bin/python deploy/local/bench_pipeline.py [--seconds S] [--rate 1250] [--step 250] [--min-rate 30]
                                                    [--text-every 10]

For each rate, a warm-up first sends each stream's points up to where the detector may alert (its warm-up, the
model's install and settling) and waits until the anomaly service has trained the streams' models (not measured:
the figures describe the pipeline's steady state). Then an open-loop client (`platform_common.testing.open_loop`:
pre-signed raw requests over 64 keep-alive sockets, each due at a fixed moment whatever happened before) posts
metric streams with a spike near their end for S seconds, one event in N with a text (the demo's mix). Latencies
count from the moment each webhook was due to be sent, so a backlog at the intake counts too (no coordinated
omission), and end at Kafka record timestamps, written by the services on this same host:
- webhook -> 202: the client's own measure;
- webhook -> enriched event published: the `events.enriched.v1` record's timestamp;
- webhook -> alert delivered: the timestamp of the `notifications.v1` outcome `delivered` of the alert that the
  webhook's event triggered;
- webhook -> contextualized, for events with a text: the `events.contextualized.v1` record's timestamp.
A rate is sustainable only in a steady state: every webhook answered 202, answered/s at least 99% of the offered
rate, webhook -> enriched p95 under 2 s over the second half of the window (after any start-up transient), every
text contextualized with a p95 under 5 s, and a backlog that does not grow (the consumer lag of enrich, anomaly and
rag, sampled every second while sending, is no higher in the last third of the window than in the first third plus
half a second of traffic). A short window's p95 can look fine while the lag climbs; such a rate is not
sustainable. From 1,250/s the bench steps up while rates hold, or down until one does (halving the step below
its last full step, down to --min-rate), to find the highest sustainable rate. A warm-up not answered in full, or
whose models are not trained in time, is reported with its rate and the bench goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psutil
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.platform import ALERTABLE_FROM, SECRET, Platform, metric_payloads  # noqa: E402

from platform_common.avro import AvroSerde  # noqa: E402
from platform_common.settings import CommonSettings  # noqa: E402
from platform_common.testing import (consumer_lag, cpu_seconds, drop_topics, metric_sum, open_loop,  # noqa: E402
                                     percentile_with_missing, signed_request)

SERVICES = ("ingest-webhook", "enrich", "anomaly", "notify", "rag")
STREAMS = ("enrich", "anomaly", "rag")  # the consumers whose lag is sampled
WARMUP_POINTS = ALERTABLE_FROM  # the detector's warm-up, its model's install and settling: it may alert after it
POINTS_PER_STREAM = 400  # measured, after the warm-up; each stream spikes near its end
TARGET_P95_S = 2.0
CONTEXT_P95_S = 5.0  # webhook -> contextualized, for events with a text
# the warm-up is not measured: sent no faster than this, so that the measured phase does not inherit its backlog
WARMUP_RATE = 600
# the shipped receivers, without the shipped grouping delay (10 s) and rate limits (Slack 1/s), which would
# measure the configuration rather than the pipeline
ROUTES = """
receivers:
  - {name: oncall-pagerduty, type: pagerduty, routing_key_env: PAGERDUTY_ROUTING_KEY}
  - {name: alerts-slack, type: slack, webhook_url_env: SLACK_WEBHOOK_URL}
route:
  receiver: alerts-slack
  group_by: [stream_id]
  group_wait: 0s
  group_interval: 0s
  routes:
    - {matchers: ['severity=~"critical|error"'], receiver: oncall-pagerduty, continue: true}
    - receiver: alerts-slack
"""


def read_topic(settings: CommonSettings, topic: str) -> list[tuple[bytes, int]]:
    """Every record of `topic` up to its current end: (value, timestamp ms)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"bench-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[tuple[bytes, int]] = []
        deadline = time.monotonic() + 300
        # done by position, not by the last record's offset: a transaction's commit marker ends a partition
        while any(tp.offset < ends[tp.partition] for tp in consumer.position([TopicPartition(topic, p) for p in ends])):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {topic} could not be read to its end in 300 s")
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append((msg.value(), msg.timestamp()[1]))
        return out
    finally:
        consumer.close()


async def decoded(serde: AvroSerde, records: list[tuple[bytes, int]]) -> list[tuple[dict, int]]:
    return [(await serde.decode(value), ts) for value, ts in records]


def busy_seconds() -> float:
    """CPU time the whole machine spent on anything but idling (every process, ours or not)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("inf")


def trainings(platform: Platform) -> float:
    """Models the anomaly service has trained (or failed to) since it started."""
    metrics = httpx.get(f"http://127.0.0.1:{platform.ports['anomaly']}/metrics", timeout=10).text
    return metric_sum(metrics, "anomaly_trainings_total")


def warm_up(platform: Platform, payloads: list[dict], rate: int, streams: int) -> list[str]:
    """Sends each stream's first points and waits until the anomaly service has trained their models: the
    measured phase then runs on streams in their steady state, as a pipeline does once it has run a while. Returns
    what went wrong (a warm-up not answered in full, models not trained in time): reported with the rate's row, and
    the bench goes on (the measured phase then says whether the rate holds)."""
    trained, warmup_rate, problems = trainings(platform), min(rate, WARMUP_RATE), []
    _, statuses = asyncio.run(open_loop(platform.ports["ingest-webhook"], signed(platform, payloads), warmup_rate))
    if statuses != {202: len(payloads)}:
        answered = ", ".join(f"{status} {n:,}" for status, n in sorted(statuses.items(), key=lambda kv: str(kv[0])))
        problems.append(f"warm-up at {warmup_rate}/s answered {answered} of {len(payloads):,}")
        print(f"bench: {problems[-1]}; going on", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 300
    while trainings(platform) < trained + streams:
        if time.monotonic() > deadline:
            problems.append(f"{trainings(platform) - trained:.0f} of {streams} warm-up models trained in 300 s")
            print(f"bench: {problems[-1]}; going on", file=sys.stderr, flush=True)
            break
        time.sleep(1)
    return problems


def signed(platform: Platform, payloads: list[dict]) -> list[bytes]:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    return [signed_request(key, json.dumps(p).encode(), platform.ports["ingest-webhook"]) for p in payloads]


class LagSampler(threading.Thread):
    """The summed consumer lag of enrich, anomaly and rag, once a second, while the webhooks are sent."""

    def __init__(self, platform: Platform, settings: CommonSettings):
        super().__init__(daemon=True)
        self.platform, self.settings = platform, settings
        self.samples: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            self.samples.append(sum(consumer_lag(self.settings, *self.platform.groups[name]) for name in STREAMS))

    def growing(self, rate: int) -> bool:
        third = max(1, len(self.samples) // 3)
        first, last = self.samples[:third], self.samples[-third:]
        return bool(first) and statistics.mean(last) > statistics.mean(first) + rate / 2


def run_rate(platform: Platform, settings: CommonSettings, rate: int, seconds: int, text_every: int) -> dict:
    step = f"{platform.run_id}-r{rate}"
    streams = max(1, rate * seconds // POINTS_PER_STREAM)
    points = WARMUP_POINTS + POINTS_PER_STREAM
    payloads = metric_payloads(step, streams=streams, points=points, spike_at=points - 40, text_every=text_every)
    # the points are interleaved across streams: the first streams x WARMUP_POINTS are each stream's first points
    warmup_problems = warm_up(platform, payloads[:streams * WARMUP_POINTS], rate, streams)
    payloads = payloads[streams * WARMUP_POINTS:]
    port = platform.ports["ingest-webhook"]
    requests = signed(platform, payloads)
    cpu_before = {name: cpu_seconds(proc.proc.pid) for name, proc in platform.services.items()}
    busy_before = busy_seconds()
    first_due = time.time() + 0.5
    due = {p["id"]: first_due + i / rate for i, p in enumerate(payloads)}  # the demo mapping: event_id = id
    lag = LagSampler(platform, settings)
    lag.start()
    answered, statuses = asyncio.run(open_loop(port, requests, rate, start=first_due))
    sent_for = time.time() - first_due
    lag.stopping.set()
    lag.join()

    # wait until the streams have committed everything, and notify has delivered what anomaly raised
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not any(consumer_lag(settings, *platform.groups[name]) for name in (*STREAMS, "notify")):
            break
        time.sleep(1)
    time.sleep(3)  # grouping and delivery of the last alerts
    cpu = {name: cpu_seconds(proc.proc.pid) - cpu_before[name] for name, proc in platform.services.items()}
    cores_busy = (busy_seconds() - busy_before) / (time.time() - first_due)

    t = platform.topics
    serde = AvroSerde(settings.schema_registry_url)
    raw, enriched, alerts, outcomes, contexts = (asyncio.run(decoded(serde, read_topic(settings, t[name])))
                                                 for name in ("events.raw.v1", "events.enriched.v1", "anomalies.v1",
                                                              "notifications.v1", "events.contextualized.v1"))
    accepted = {e["event_id"] for e, _ in raw if e["event_id"] in due}
    to_enriched = [ts / 1000 - due[e["event_id"]] for e, ts in enriched if e["event_id"] in accepted]
    half = first_due + len(payloads) / rate / 2
    second_half = [ts / 1000 - due[e["event_id"]] for e, ts in enriched
                   if e["event_id"] in accepted and due[e["event_id"]] >= half]
    second_half_sent = sum(1 for d in due.values() if d >= half)
    trigger_event = {a["alert_id"]: a["event_id"] for a, _ in alerts
                     if a["action"] == "trigger" and a["event_id"] in accepted}
    to_delivered = [ts / 1000 - due[trigger_event[n["alert_id"]]] for n, ts in outcomes
                    if n["outcome"] == "delivered" and n["alert_id"] in trigger_event]
    texts = {p["id"] for p in payloads if "text" in p} & accepted
    to_context = [ts / 1000 - due[c["event_id"]] for c, ts in contexts if c["event_id"] in texts]
    tiers = Counter(c["outcome"] for c, _ in contexts if c["event_id"] in accepted)
    ok = statuses.get(202, 0)
    return {"rate": rate, "warmup_problems": warmup_problems, "sent": len(requests), "accepted": ok,
            "achieved": ok / sent_for, "answered": answered,
            "texts": len(texts), "to_context": to_context, "tiers": tiers,
            "enriched": len(to_enriched), "streams": streams, "alerts": len(trigger_event),
            "deliveries": len(to_delivered), "to_enriched": to_enriched, "to_delivered": to_delivered,
            "cpu_ms": {name: 1000 * seconds / max(ok, 1) for name, seconds in cpu.items()}, "cores_busy": cores_busy,
            "steady_p95": pct(second_half + [float("inf")] * (second_half_sent - len(second_half)), 95),
            "lag_max": max(lag.samples, default=0),
            "backlog_growing": lag.growing(rate),
            "sustainable": ok == len(requests) and ok / sent_for >= 0.99 * rate and len(to_enriched) >= ok > 0
            and pct(second_half, 95) < TARGET_P95_S and len(second_half) >= second_half_sent
            and len(to_context) >= len(texts) and pct(to_context, 95) < CONTEXT_P95_S and not lag.growing(rate)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=1250, help="the first rate; then up or down by --step")
    parser.add_argument("--step", type=int, default=250)
    parser.add_argument("--min-rate", type=int, default=30, help="stepping down (halving below --step) stops here")
    parser.add_argument("--text-every", type=int, default=10,
                        help="one event in N carries a text (the demo's mix: most events are metric-only)")
    args = parser.parse_args()
    settings = CommonSettings(service_name="bench")
    run_id = f"pbench{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        routes = Path(tmp) / "routes.yaml"
        routes.write_text(ROUTES)
        platform = Platform(run_id, Path(tmp), SERVICES, extra_env={
            "LOG_LEVEL": "WARNING", "INGEST_WORKERS": os.environ.get("INGEST_WORKERS", "2"),
            "NOTIFY_ROUTES_FILE": str(routes)}).start()
        results = []
        try:
            # from the required rate, up while it holds, or down until it holds: the highest sustainable rate.
            # Below the last full step down the step halves (250, 125, 62, ...), so a rate under the step is found too
            rate, step, direction = args.rate, args.step, None
            while args.min_rate <= rate <= 4 * args.rate:
                print(f"bench: pipeline at {rate}/s ...", file=sys.stderr, flush=True)
                results.append(run_rate(platform, settings, rate, args.seconds, args.text_every))
                held = results[-1]["sustainable"]
                direction = direction or (1 if held else -1)
                if held != (direction == 1):
                    break
                if direction == -1 and rate - step < step:
                    step = rate // 2
                rate += direction * step
        finally:
            platform.stop()
            drop_topics(settings, list(platform.topics.values()))

    print("## pipeline\n")
    print(f"Whole pipeline as processes (ingest-webhook with {os.environ.get('INGEST_WORKERS', '2')} workers, enrich "
          "with the local models, anomaly, notify, rag with its default embedded models, local receivers) on "
          f"{os.cpu_count()} cores shared with the stack and the load generator; open-loop signed webhooks for "
          f"{args.seconds} s per rate, {POINTS_PER_STREAM} points per stream after a warm-up of {WARMUP_POINTS} "
          "points whose models are trained before measuring, each stream spiking near its end; one event in "
          f"{args.text_every} carries a text (enrich runs NER and sentiment on it; metric-only events skip the "
          "models). Latencies from the moment each webhook was due to be sent (a backlog at the intake counts) to "
          "the 202, or to the Kafka record timestamp of its enriched event, of its alert's delivery (notify without "
          "grouping delay or rate limits), or of the `events.contextualized.v1` record of each event with a text "
          "(rag's documents index is empty here: retrieval runs and finds nothing to cite). Sustainable (steady "
          "state): every webhook answered 202, answered/s >= 99% of offered, webhook -> enriched p95 over the second "
          f"half of the window under {TARGET_P95_S:g} s (the target at 1,250/s), webhook -> contextualized p95 of "
          f"the texts under {CONTEXT_P95_S:g} s with every text contextualized, and the enrich + anomaly + rag lag "
          "not growing (mean of the last third of the per-second samples at most the first third's plus half a "
          "second of traffic). One run per rate: the bench steps through the rates once, so each row is a single "
          "measurement, not a median.\n")
    print("| offered rate /s | answered 202 / sent | answered /s | webhook -> 202 p50 / p95 / p99 | enriched "
          "| webhook -> enriched p50 / p95 / p99 | alerts (streams spiked), deliveries "
          "| webhook -> alert delivered p50 / p95 / p99 | steady p95 (2nd half) | texts contextualized "
          "| webhook -> contextualized p50 / p95 / p99 (texts) | outcomes | lag max, growing | sustainable |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        # an accepted event not enriched within the drain time counts as slower than every enriched one
        a = " / ".join(percentile_with_missing(r["answered"], r["sent"], q) for q in (50, 95, 99))
        e = " / ".join(percentile_with_missing(r["to_enriched"], r["accepted"], q) for q in (50, 95, 99))
        d = " / ".join(percentile_with_missing(r["to_delivered"], r["deliveries"], q) for q in (50, 95, 99)
                       ) if r["deliveries"] else "none delivered"
        c = " / ".join(percentile_with_missing(r["to_context"], r["texts"], q) for q in (50, 95, 99))
        print(f"| {r['rate']:,} | {r['accepted']:,} / {r['sent']:,} | {r['achieved']:,.0f} | {a} | {r['enriched']:,} | "
              f"{e} | {r['alerts']} of {r['streams']} streams, {r['deliveries']} deliveries | "
              f"{d} | {r['steady_p95']:.3f} s | {len(r['to_context']):,} of {r['texts']:,} | {c} | "
              f"{', '.join(f'{k} {n:,}' for k, n in sorted(r['tiers'].items()))} | "
              f"{r['lag_max']:,}, {'yes' if r['backlog_growing'] else 'no'} | "
              f"{'yes' if r['sustainable'] else 'no'} |")
    print("\nCPU per accepted webhook, by service (all its processes), from the first webhook until the pipeline "
          "drained; and the machine's busy cores over the same time (the stack, the load generator and other work "
          "on the host included):\n")
    print(f"| offered rate /s | {' | '.join(SERVICES)} | all | machine busy (of {os.cpu_count()} cores) |")
    print("|---|" + "---|" * (len(SERVICES) + 2))
    for r in results:
        ms = r["cpu_ms"]
        print(f"| {r['rate']:,} | " + " | ".join(f"{ms[name]:.2f} ms" for name in SERVICES)
              + f" | {sum(ms.values()):.2f} ms | {r['cores_busy']:.2f} |")
    problems = [(r["rate"], p) for r in results for p in r["warmup_problems"]]
    if problems:
        print("\nWarm-up problems (the rate was measured anyway): "
              + "; ".join(f"at {rate:,}/s, {p}" for rate, p in problems) + ".")
    best = max((r["rate"] for r in results if r["sustainable"]), default=None)
    print(f"\nHighest sustainable rate tried: {f'{best:,}/s' if best else 'none of the rates tried'}.\n")
    print(f"`.venv/bin/python deploy/local/bench_pipeline.py --seconds {args.seconds} --rate {args.rate} "
          f"--step {args.step} --min-rate {args.min_rate} --text-every {args.text_every}`")


if __name__ == "__main__":
    main()
