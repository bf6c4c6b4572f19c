"""Delivery of a generated report: email over SMTP with the PDF attached, and a Slack message with the summary and
the portal link. Each outcome is returned (and counted); a failed channel does not stop the others."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from email.message import EmailMessage

import httpx
from prometheus_client import Counter

log = logging.getLogger(__name__)

DELIVERIES = Counter("reports_deliveries_total", "Report deliveries by channel and outcome", ["channel", "outcome"])


def summary(report: dict, limit: int = 3) -> str:
    text = " ".join(s["text"] for s in report["narrative"][:limit])
    names = "; ".join(a["label"] for a in report["anomalies"][:5])
    return " ".join(p for p in (text, f"Anomalies: {names}." if names else "No anomaly in the period.") if p)


def email_message(report: dict, pdf: bytes, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"{report['title']} ({report['period_start'][:10]} to {report['period_end'][:10]})"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(f"{summary(report)}\n\nThe full report, with its charts and sources: {report['portal_url']}\n")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"{report['definition']}-"
                           f"{report['period_end'][:10]}-{report['report_id'][:8]}.pdf")
    return message


async def send_email(report: dict, pdf: bytes, recipients: list[str], host: str, port: int, sender: str) -> None:
    message = email_message(report, pdf, sender, recipients)

    def send() -> None:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.send_message(message)
    await asyncio.to_thread(send)


def slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters as entities: text from events or the model cannot form links or
    mentions (`<http://…|…>`, `<!channel>`, `<@U…>`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(report: dict) -> str:
    link = report["portal_url"].replace("|", "%7C").replace(">", "%3E")  # our own link, the only one in the message
    return f"*{slack_escape(report['title'])}*\n{slack_escape(summary(report))}\n<{link}|Open the report>"


async def post_slack(report: dict, webhook_url: str) -> None:
    text = slack_text(report)
    async with httpx.AsyncClient(timeout=15) as client:
        (await client.post(webhook_url, json={"text": text})).raise_for_status()


async def deliver(report: dict, pdf: bytes, *, email: list[str], slack_url: str | None, smtp_host: str,
                  smtp_port: int, sender: str) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    channels = []
    if email:
        channels.append(("email", send_email(report, pdf, email, smtp_host, smtp_port, sender)))
    if slack_url:
        channels.append(("slack", post_slack(report, slack_url)))
    for channel, job in channels:
        try:
            await job
            outcomes[channel] = "delivered"
        except Exception as e:  # one channel down must not block the others
            outcomes[channel] = f"failed: {type(e).__name__}"
            log.warning("report %s: %s delivery failed: %s", report["report_id"], channel, type(e).__name__)
        DELIVERIES.labels(channel, outcomes[channel].split(":")[0]).inc()
    return outcomes
