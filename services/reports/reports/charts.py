"""Vega-Lite specs of a report's charts, and their server-side rendering with vl-convert (no browser involved).

The same spec is rendered to PNG for the PDF and embedded with Vega-Embed in the portal.
"""

from __future__ import annotations

import asyncio
import base64
from functools import cache

import vl_convert

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
MAX_SERIES_CHARTS = 6


def series_chart(stream: str, metric: str, points: list[dict], anomalies: list[dict]) -> dict:
    """The metric's mean per bucket as a line, each anomaly of that stream and metric as a red point on it."""
    line = {"data": {"values": [{"t": p["t"], "value": p["value"]} for p in points]},
            "mark": {"type": "line", "point": True},
            "encoding": {"x": {"field": "t", "type": "temporal", "title": None},
                         "y": {"field": "value", "type": "quantitative", "title": metric},
                         "tooltip": [{"field": "t", "type": "temporal", "format": "%Y-%m-%d %H:%M"},
                                     {"field": "value", "type": "quantitative"}]}}
    layers = [line]
    if anomalies:
        layers.append({
            "data": {"values": [{"t": a["at"], "value": a["value"], "label": a["label"], "severity": a["severity"],
                                 "figure": a["id"]} for a in anomalies]},
            "mark": {"type": "point", "filled": True, "size": 160, "color": "#d62728"},
            "encoding": {"x": {"field": "t", "type": "temporal"}, "y": {"field": "value", "type": "quantitative"},
                         "tooltip": [{"field": "label"}, {"field": "value", "type": "quantitative"},
                                     {"field": "t", "type": "temporal", "format": "%Y-%m-%d %H:%M"}]}})
        layers.append({
            "data": {"values": [{"t": a["at"], "value": a["value"], "text": f"anomaly {a['value']:g}"}
                                for a in anomalies]},
            "mark": {"type": "text", "dy": -14, "color": "#d62728", "fontWeight": "bold"},
            "encoding": {"x": {"field": "t", "type": "temporal"}, "y": {"field": "value", "type": "quantitative"},
                         "text": {"field": "text"}}})
    return {"$schema": SCHEMA, "title": f"{metric} on {stream}", "width": 520, "height": 180, "layer": layers}


def source_chart(figures: list[dict]) -> dict:
    return {"$schema": SCHEMA, "title": "Events by source", "width": 520, "height": 120,
            "data": {"values": [{"source": f["source"], "events": f["value"]} for f in figures]},
            "mark": "bar",
            "encoding": {"y": {"field": "source", "type": "nominal", "title": None},
                         "x": {"field": "events", "type": "quantitative"},
                         "tooltip": [{"field": "source"}, {"field": "events", "type": "quantitative"}]}}


def build_charts(series: list[dict], anomalies: list[dict], kpis: list[dict]) -> list[dict]:
    """Series with anomalies first (they are the news), then the others, up to MAX_SERIES_CHARTS."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for p in series:
        by_key.setdefault((p["stream"], p["metric"]), []).append(p)
    flagged = {(a["stream"], a["metric"]) for a in anomalies}
    keys = sorted(by_key, key=lambda k: (k not in flagged, k))[:MAX_SERIES_CHARTS]
    charts = [{"id": f"c{i}", "stream": s, "metric": m,
               "spec": series_chart(s, m, by_key[(s, m)],
                                    [a for a in anomalies if (a["stream"], a["metric"]) == (s, m)])}
              for i, (s, m) in enumerate(keys, 1)]
    sources = [f for f in kpis if f["kind"] == "events_by_source"]
    if sources:
        charts.append({"id": f"c{len(charts) + 1}", "spec": source_chart(sources)})
    return charts


async def render_png(spec: dict) -> bytes:
    return await asyncio.to_thread(vl_convert.vegalite_to_png, spec, scale=2)


async def png_data_uri(spec: dict) -> str:
    return "data:image/png;base64," + base64.b64encode(await render_png(spec)).decode()


@cache
def vega_embed_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script, from the vl-convert wheel: the portal needs no CDN."""
    return vl_convert.javascript_bundle()  # type: ignore[call-arg]  # the stub requires `snippet`; it is optional
