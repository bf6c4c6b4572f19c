"""A report over a period with a known injected anomaly, written by an LLM that invents numbers."""

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from platform_common.testing import decode_avro, read_messages
from reports.config import Recipients
from reports.grounding import Guard, figure_sources, passage_sources
from reports.scheduler import run_due


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


async def test_invented_numbers_are_removed_and_every_figure_traces_to_its_source(generated, rsettings, store, h):
    report, _, _, chat = generated
    removed = {r["sentence"]: r["numbers"] for r in report["removed"]}
    assert removed == {"Revenue grew by 9999 units compared to last week.": ["9999"],
                       "Customer satisfaction reached 73.5%.": ["73.5%"]}
    # the guardrail asked for rewrites (within its budget of two) before removing
    assert [r["rewrite"] for r in report["removed"]] == [h.REWRITE, None]
    assert sum("Rewrite it" in r["messages"][-1]["content"] for r in chat.requests) == 2
    kept = [s["text"] for s in report["narrative"]]
    assert kept == ["The period saw 49 events.",
                    "The critical anomaly in temperature on pump-7 reached 97.5 against a threshold of 3.5.",
                    "Mean temperature on pump-7 was 43.26, under the target of 60 degrees."]
    figures = {f["id"]: f for f in report["kpis"] + report["anomalies"]}
    links = {seg["text"]: seg["ref"] for s in report["narrative"] for seg in s["segments"] if "ref" in seg}
    assert figures[links["49"]]["label"] == "Events in the period"
    assert figures[links["97.5"]]["kind"] == "anomaly" and links["3.5"] == links["97.5"]
    assert figures[links["43.26"]]["label"] == "Mean temperature on pump-7"
    assert links["60"] == "strategy-1#0"
    # independently of what was recorded: no number of the kept narrative is ungrounded
    guard = Guard(figure_sources(list(figures.values())) + passage_sources(report["passages"]),
                  ["pump-7", "line-2"], (h.PERIOD_END, h.PERIOD_END))
    assert all(guard.check(s).ok for s in kept)
    assert report["lineage"]["cited_chunks"] == ["strategy-1#0"]
    assert report["lineage"]["model"] == "stub-inventor" and report["lineage"]["index_version"] == "idx-test"
    assert report["lineage"]["data_window"] == [report["period_start"], report["period_end"]]
    assert report["lineage"]["query_versions"]["kpis"] == "kpis@1"
    assert all(v.split("@")[0] in ("narrative.v1", "rewrite.v1") for v in report["lineage"]["prompt_versions"])

    [message] = read_messages(rsettings, rsettings.reports_topic, 1)
    meta = decode_avro(rsettings, message)
    assert (meta["report_id"], meta["removed_sentences"], meta["anomalies"]) == (report["report_id"], 2, 1)
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


async def test_the_scheduler_makes_each_due_report_once(generator, config, h):
    config.reports = [h.DEFINITION.model_copy(update={"recipients": Recipients()})]
    # an hour after the 12:00 fire time, the period ending at 12:00 is due, once
    [made] = await run_due(config, generator, now=h.PERIOD_END + timedelta(hours=1))
    assert await run_due(config, generator, now=h.PERIOD_END + timedelta(hours=2)) == []
    report = await generator.store.report(made, "default")
    assert report["period_end"] == h.PERIOD_END.isoformat()
