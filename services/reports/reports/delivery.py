"""Delivery of a generated report over one channel: email over SMTP with the PDF attached, or a Slack message with
the summary and the portal link. The run table (`reporter`) retries each channel on its own."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import httpx

from .config import ReportDefinition
from .settings import ReportsSettings


def summary(report: dict, limit: int = 3) -> str:
    text = " ".join(s["text"] for s in report["narrative"][:limit])
    names = "; ".join(a["label"] for a in report["anomalies"][:5])
    return " ".join(p for p in (text, f"Anomalies: {names}." if names else "No anomaly in the period.") if p)


def email_message(report: dict, pdf: bytes, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"{report['title']} ({report['period_start'][:10]} to {report['period_end'][:10]})"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    # the same id on every attempt: a mail system or client that got an earlier attempt can drop the copy
    message["Message-ID"] = f"<{report['report_id']}@reports.platform>"
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


async def deliver(channel: str, report: dict, pdf: bytes, definition: ReportDefinition,
                  settings: ReportsSettings) -> None:
    """Sends the report over `channel`; raises if the receiver did not take it."""
    if channel == "email":
        await send_email(report, pdf, definition.recipients.email, settings.reports_smtp_host,
                         settings.reports_smtp_port, settings.reports_smtp_sender)
    elif channel == "slack" and settings.reports_slack_webhook_url:
        await post_slack(report, settings.reports_slack_webhook_url)
    else:
        raise ValueError(f"no delivery over {channel!r}")
