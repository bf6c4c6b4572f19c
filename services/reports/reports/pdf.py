"""The report as PDF: HTML from a template, charts as PNG rendered by vl-convert, laid out by WeasyPrint."""

from __future__ import annotations

import asyncio

from jinja2 import Environment, PackageLoader, select_autoescape
from weasyprint import HTML

from .charts import png_data_uri

_env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape())


async def render_pdf(report: dict) -> bytes:
    charts = [await png_data_uri(c["spec"]) for c in report["charts"]]
    html = _env.get_template("pdf.html").render(r=report, charts=charts)
    return await asyncio.to_thread(lambda: HTML(string=html).write_pdf())
