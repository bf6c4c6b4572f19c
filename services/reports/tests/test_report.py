"""A report over a period with a known injected anomaly, written by an LLM that invents numbers."""

import shutil
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from platform_common.testing import decode_avro, read_messages
from reports.store import Scope


async def test_the_injected_anomaly_is_named_and_charted(generated, period, h):
    report, _, rag, _ = generated
    [named] = report["anomalies"]
    assert named["label"] == "Critical anomaly in temperature on pump-7"
    assert (named["value"], named["alert_id"]) == (h.SPIKE, period["alert_id"])
    # the first chart is the anomalous series, with the anomaly marked on it
    chart = report["charts"][0]
    assert (chart["stream"], chart["metric"]) == ("pump-7", "temperature")
    marks = chart["spec"]["layer"][1]["data"]["values"]
    assert [m["value"] for m in marks] == [h.SPIKE] and marks[0]["figure"] == named["id"]
    assert max(p["value"] for p in chart["spec"]["layer"][0]["data"]["values"]) == h.SPIKE
    kpis = {k["label"]: k["value"] for k in report["kpis"]}
    # 49 events in the window; the reading one minute after it (temperature 500) counts nowhere
    assert kpis["Events in the period"] == 49 and kpis["Highest temperature on pump-7"] == h.SPIKE
    assert kpis["Anomalies in the period"] == 1
    # asked with the tenant's own rag key: rag takes the tenant from the key, the request names none
    assert rag.queries == [{"question": "Daily operations", "k": 4, "generate": False}]
    assert rag.authorizations == [f"Bearer {h.RAG_KEY}"]


async def test_code_fills_the_numbers_and_refused_sentences_are_removed_with_their_reasons(generated, rsettings,
                                                                                           store, h):
    report, _, _, chat = generated
    removed = {r["sentence"]: r["problems"] for r in report["removed"]}
    assert list(removed) == ["Revenue grew by 9999 units compared to last week.",
                             "Highest temperature on line-2 was {k9}.", "Fraud caused the outage."]
    assert "writes numbers of its own: 9999" in removed["Revenue grew by 9999 units compared to last week."]
    assert removed["Highest temperature on line-2 was {k9}."] == [
        "{k9} (Highest temperature on pump-7) is put on the stream line-2"]
    assert removed["Fraud caused the outage."] == ["states no figure: a claim that cannot be checked against the data"]
    # the guardrail asked for rewrites (its budget of two went to the first refused sentence) before removing
    assert [r["rewrite"] for r in report["removed"]] == [h.REWRITE, None, None]
    assert sum("Rewrite it" in r["messages"][-1]["content"] for r in chat.requests) == 2
    kept = [s["text"] for s in report["narrative"]]
    assert kept == ["The period saw 49 events.",
                    "The critical anomaly in temperature on pump-7 reached 97.50.",
                    "Mean temperature on pump-7 was 43.26."]
    figures = {f["id"]: f for f in report["kpis"] + report["anomalies"]}
    links = {seg["text"]: seg["ref"] for s in report["narrative"] for seg in s["segments"] if "ref" in seg}
    assert figures[links["49"]]["label"] == "Events in the period"
    assert figures[links["97.50"]]["kind"] == "anomaly"
    assert figures[links["43.26"]]["label"] == "Mean temperature on pump-7"
    lineage = report["lineage"]
    assert lineage["cited_chunks"] == ["strategy-1#0"]
    assert lineage["model"] == "stub-inventor" and lineage["index_version"] == "idx-test"
    assert lineage["data_window"] == [report["period_start"], report["period_end"]]
    assert lineage["query_versions"]["kpis"] == "kpis@1"
    assert all(v.split("@")[0] in ("narrative.v2", "rewrite.v2") for v in lineage["prompt_versions"])
    assert len(lineage["definition_sha256"]) == 64 and lineage["as_of"] and lineage["watermark"] is None
    assert set(lineage["stage_seconds"]) == {"figures", "retrieval", "narrative", "charts", "pdf"}

    [message] = read_messages(rsettings, rsettings.reports_topic, 1)
    meta = decode_avro(rsettings, message)
    assert (meta["report_id"], meta["removed_sentences"], meta["anomalies"]) == (report["report_id"], 3, 1)
    assert meta["cited_chunks"] == ["strategy-1#0"] and meta["model"] == "stub-inventor"
    assert meta["portal_url"] == f"http://portal.test/reports/{report['report_id']}"
    # stored for its tenant only
    assert (await store.report(report["report_id"], "default"))["title"] == "Daily operations"
    assert await store.report(report["report_id"], "other") is None


@pytest.mark.skipif(not shutil.which("pdftoppm"), reason="pdftoppm (poppler-utils) is not installed")
async def test_the_pdf_shows_the_charts_and_the_narrative(generated, tmp_path: Path):
    _, pdf, _, _ = generated
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "Daily operations" in text and "The period saw 49 events." in text
    assert "Critical anomaly in temperature on pump-7" in text
    assert "9999" not in text.split("Removed by the grounding check")[0]
    images = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout
    assert len(images.strip().splitlines()) - 2 >= 3  # the three series charts and the sources chart, at least 3
    subprocess.run(["pdftoppm", "-r", "70", "-png", str(path), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages
    # the anomaly marker's red (#d62728) is on a rendered page: the chart was drawn, not only embedded
    red = 0
    for page in pages:
        pixels = Image.open(page).convert("RGB").getdata()
        red += sum(1 for r, g, b in pixels if r > 180 and g < 90 and b < 90)
    assert red > 30


async def test_a_manual_run_makes_a_new_version_and_keeps_the_earlier_one(generated, reporter, store, h):
    first, _, _, _ = generated
    second, _ = await h.make_report(reporter, h.QUIET, h.PERIOD_END)
    assert (first["version"], second["version"]) == (1, 2) and first["report_id"] != second["report_id"]
    assert (await store.report(first["report_id"], "default"))["generated_at"] == first["generated_at"]
    listed = [(r["report_id"], r["version"]) for r in await store.list_reports("default")]
    assert sorted(listed, key=lambda r: r[1]) == [(first["report_id"], 1), (second["report_id"], 2)]


async def test_drill_down_reads_the_rows_as_of_the_report(generated, store, h):
    """A late row of the period does not change a made report's drill-down: it matches the stored figure."""
    report, _, _, _ = generated
    await store.upsert_event(h.event("pump-7", h.PERIOD_END - timedelta(hours=1), {"temperature": 41.0}))
    scope_then = Scope("default", h.PERIOD_END - timedelta(hours=24), h.PERIOD_END,
                       as_of=datetime.fromisoformat(report["lineage"]["as_of"]))
    total = next(f for f in report["kpis"] if f["label"] == "Events in the period")
    assert len(await store.rows(scope_then, table="events")) == total["value"] == 49
    assert len(await store.rows(replace(scope_then, as_of=None), table="events")) == 50
