"""The portal in a real headless browser (Debian's chromium through Playwright): sign in, open a report, click a
figure, see its source rows, download the PDF; another tenant's user cannot see the report, even by URL."""

import shutil
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from reports.portal import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed")


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(page, base: str, username: str, password: str) -> None:
    await page.goto(f"{base}/reports")
    assert page.url.startswith(f"{base}/login")  # signed out: sent to the sign-in page
    await page.get_by_label("User name").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_sign_in_open_a_report_and_drill_down_from_a_figure(generated, store, config, rsettings, browser, h):
    report, pdf, _, _ = generated
    async with h.serving(create_app(config, store, None, {}, rsettings)) as base:
        page = await browser.new_page(accept_downloads=True)
        await sign_in(page, base, "alice", "wrong")
        await page.get_by_role("alert").get_by_text("Wrong user name or password.").wait_for()

        await page.get_by_label("User name").fill("alice")
        await page.get_by_label("Password").fill("alice-pw")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("heading", name="Reports for default").wait_for()
        await page.get_by_role("link", name="Daily operations").click()
        await page.wait_for_url(f"{base}/reports/{report['report_id']}")

        # the charts are live Vega views, drawn in the browser from the bundled Vega-Embed
        await page.locator("#chart-c1 canvas, #chart-c1 svg").first.wait_for()
        assert await page.locator(".chart canvas, .chart svg").count() == len(report["charts"])

        # the anomaly's figure in the narrative leads to the alert it came from
        await page.locator("#narrative a.figure", has_text="97.5").click()
        rows = page.locator("#rows table.source-rows")
        await rows.wait_for()
        assert "source row(s)" in await page.locator("#rows h3").inner_text()
        assert await rows.locator("tr").count() == 2  # header + the one alert
        assert await rows.get_by_text(report["anomalies"][0]["alert_id"]).count() == 1

        # the event count leads to the 49 events of the period
        await page.locator("#narrative a.figure", has_text="49").click()
        await page.locator("#rows h3", has_text="Events in the period: 49 source row(s)").wait_for()
        assert await rows.locator("tr").count() == 50

        async with page.expect_download() as download:
            await page.get_by_role("link", name="Download PDF").click()
        path = await (await download.value).path()
        assert Path(path).read_bytes() == pdf


async def test_another_tenants_user_cannot_see_the_report_even_by_url(generated, store, config, rsettings, browser,
                                                                       h):
    report, _, _, _ = generated
    rid = report["report_id"]
    async with h.serving(create_app(config, store, None, {}, rsettings)) as base:
        page = await browser.new_page()
        await sign_in(page, base, "mallory", "mallory-pw")
        await page.get_by_role("heading", name="Reports for other").wait_for()
        assert await page.get_by_text("No report yet.").count() == 1
        for path in (f"/reports/{rid}", f"/reports/{rid}.pdf", f"/reports/{rid}/figures/k1",
                     f"/reports/{rid}/rows/k1"):
            response = await page.goto(f"{base}{path}") if not path.endswith(".pdf") else \
                await page.request.get(f"{base}{path}")
            assert response.status == 404, path
            assert "Daily operations" not in await response.text()
        # the session cookie is Secure, HttpOnly and SameSite
        [cookie] = [c for c in await page.context.cookies() if c["name"] == "reports_session"]
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        # signed out, the drill-down rows answer 401, pages send to the sign-in page, the API wants a key
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get(f"/reports/{rid}/rows/k1")).status_code == 401
            assert (await client.get(f"/reports/{rid}")).headers["location"].startswith("/login")
            assert (await client.get(f"/api/reports/{rid}")).status_code == 401
