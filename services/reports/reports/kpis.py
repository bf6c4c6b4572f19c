"""KPIs, anomalies and time series of one report scope, each figure with what its source rows are (drill-down)."""

from __future__ import annotations

from datetime import timedelta

from .config import ReportDefinition
from .store import Scope, Store


def _figure(kind: str, label: str, value: float, decimals: int, drill: dict, unit: str = "", **about) -> dict:
    value = round(float(value), decimals) if decimals else round(value)
    return {"kind": kind, "label": label, "value": value, "display": f"{value:,.{decimals}f}{unit}", "unit": unit,
            "drill": drill, **about}


async def compute_kpis(store: Store, scope: Scope, definition: ReportDefinition) -> list[dict]:
    """Per stream and per source, in a stable order; ids (k1, k2, ...) are what narrative figures cite."""
    kinds = set(definition.kpis)
    figures: list[dict] = []
    if "event_count" in kinds:
        counts = await store.stream_counts(scope)
        figures.append(_figure("event_count", "Events in the period", sum(r["n"] for r in counts), 0,
                               {"table": "events"}))
        figures += [_figure("event_count", f"Events on {r['stream_id']}", r["n"], 0,
                            {"table": "events", "stream": r["stream_id"]}, stream=r["stream_id"]) for r in counts]
    if kinds & {"metric_mean", "metric_max"}:
        for r in await store.metric_stats(scope):
            drill = {"table": "events", "stream": r["stream_id"], "metric": r["metric"]}
            about = {"stream": r["stream_id"], "metric": r["metric"]}
            if "metric_mean" in kinds:
                figures.append(_figure("metric_mean", f"Mean {r['metric']} on {r['stream_id']}", r["mean"], 2,
                                       drill, **about))
            if "metric_max" in kinds:
                figures.append(_figure("metric_max", f"Highest {r['metric']} on {r['stream_id']}", r["max"], 2,
                                       drill, **about))
    if "negative_share" in kinds:
        figures += [_figure("negative_share", f"Share of negative events on {r['stream_id']}", r["share"], 1,
                            {"table": "events", "stream": r["stream_id"], "negative": True}, "%",
                            stream=r["stream_id"]) for r in await store.negative_shares(scope)]
    if "anomaly_count" in kinds:
        anomalies = await store.anomalies(scope)
        figures.append(_figure("anomaly_count", "Anomalies in the period", len(anomalies), 0, {"table": "anomalies"}))
    if "events_by_source" in kinds:
        figures += [_figure("events_by_source", f"Events from source {r['source']}", r["n"], 0,
                            {"table": "events", "source": r["source"]}, source=r["source"])
                    for r in await store.source_counts(scope)]
    for i, f in enumerate(figures, 1):
        f["id"] = f"k{i}"
    return figures


async def anomaly_figures(store: Store, scope: Scope, first_id: int) -> list[dict]:
    """Each anomaly alert of the period as a figure (its value), named in the report and marked on the charts."""
    result = []
    for i, r in enumerate(await store.anomalies(scope), first_id):
        f = _figure("anomaly", f"{r['severity'].capitalize()} anomaly in {r['metric']} on {r['stream_id']}",
                    r["value"], 2, {"table": "anomalies", "stream": r["stream_id"], "metric": r["metric"]},
                    stream=r["stream_id"], metric=r["metric"], severity=r["severity"],
                    score=round(r["score"], 2), threshold=round(r["threshold"], 2),
                    at=r["window_end"].isoformat(), alert_id=r["alert_id"], detector=r["detector"],
                    model_version=r["model_version"])
        f["id"] = f"a{i}"
        result.append(f)
    return result


def bucket_for(length: timedelta) -> timedelta:
    """About 48 points per series, in whole minutes."""
    return max(timedelta(minutes=1), timedelta(minutes=round(length.total_seconds() / 60 / 48)))


async def compute_series(store: Store, scope: Scope, bucket: timedelta) -> list[dict]:
    return [{"stream": r["stream_id"], "metric": r["metric"], "t": r["bucket"].isoformat(),
             "value": round(r["value"], 4), "n": r["n"]} for r in await store.series(scope, bucket)]
