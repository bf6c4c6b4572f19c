"""Delivery to a real SMTP server (aiosmtpd) and to a Slack incoming-webhook endpoint."""

import asyncio
import email
import re
from email import policy

from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request

from reports.config import Recipients
from reports.delivery import deliver, slack_text
from reports.narrative import without_links_or_mentions
from reports.settings import ReportsSettings


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


def report_fixture() -> dict:
    return {"report_id": "7f1c0000-0000-0000-0000-000000000001", "definition": "daily-ops", "title": "Daily operations",
            "period_start": "2026-11-19T12:00:00+00:00", "period_end": "2026-11-20T12:00:00+00:00",
            "portal_url": "http://portal.test/reports/7f1c0000-0000-0000-0000-000000000001",
            "narrative": [{"text": "The period saw 49 events."}],
            "anomalies": [{"label": "Critical anomaly in temperature on pump-7"}]}


async def test_email_arrives_with_the_pdf_and_slack_gets_the_summary_and_link(h):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=h.free_port())
    controller.start()
    slack = FastAPI()
    slack.state.posts = []

    @slack.post("/hook")
    async def hook(request: Request) -> str:
        slack.state.posts.append(await request.json())
        return "ok"

    pdf = b"%PDF-1.7\n fake body for the attachment test\n%%EOF"
    try:
        async with h.serving(slack) as slack_url:
            settings = ReportsSettings(reports_slack_webhook_url=f"{slack_url}/hook", reports_smtp_host="127.0.0.1",
                                       reports_smtp_port=controller.port)
            definition = h.DEFINITION.model_copy(update={"recipients": Recipients(
                email=["ops@example.com", "cto@example.com"], slack=True)})
            for channel in ("email", "slack"):
                await deliver(channel, report_fixture(), pdf, definition, settings)
    finally:
        await asyncio.to_thread(controller.stop)
    [(recipients, message)] = inbox.messages
    assert recipients == ["ops@example.com", "cto@example.com"]
    assert message["Subject"] == "Daily operations (2026-11-19 to 2026-11-20)"
    # the same on every attempt: a receiver that got an earlier attempt can tell
    assert message["Message-ID"] == "<7f1c0000-0000-0000-0000-000000000001@reports.platform>"
    assert message.is_multipart()
    body = message.get_body(("plain",)).get_content()
    assert "Critical anomaly in temperature on pump-7" in body and "http://portal.test/reports/" in body
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename().endswith(".pdf") and attachment.get_content() == pdf
    [post] = slack.state.posts
    assert "<http://portal.test/reports/7f1c0000-0000-0000-0000-000000000001|Open the report>" in post["text"]
    assert "The period saw 49 events." in post["text"]


def test_slack_text_escapes_what_would_form_links_or_mentions():
    report = {**report_fixture(), "title": "Ops <!channel> & co",
              "narrative": [{"text": "Line <http://evil.example|click> > 3 & <@U1>."}],
              "anomalies": [{"label": "Critical anomaly in <b>load</b> on pump-7"}]}
    text = slack_text(report)
    # the only markup left is the portal link this service adds
    assert [m for m in re.findall(r"<[^>]*>", text)] == [
        "<http://portal.test/reports/7f1c0000-0000-0000-0000-000000000001|Open the report>"]
    assert "Ops &lt;!channel&gt; &amp; co" in text and "&lt;@U1&gt;" in text and "&lt;b&gt;load&lt;/b&gt;" in text


def test_model_output_loses_links_and_mentions_but_keeps_comparisons():
    assert without_links_or_mentions(
        "See <https://evil.example|the docs> <!here> [docs](http://x.io/y) www.evil.org/a evil.com/p, "
        "mail ops@example.com, ping @alice.") == "See the docs docs mail , ping alice."
    assert without_links_or_mentions("Mean 43.2 < 60 and > 3 on pump-7.") == "Mean 43.2 < 60 and > 3 on pump-7."
