"""The web portal and API: sign-in, the signed-in tenant's reports, report pages with interactive charts and
drill-down from any figure to its source rows, PDF download.

Every lookup is by report id AND the user's tenant: another tenant's report answers 404, exactly like a report that
does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from platform_common.ops import Check, ops_router
from starlette.middleware.sessions import SessionMiddleware

from .charts import vega_embed_bundle
from .config import Config, User
from .generator import ReportGenerator
from .store import Scope, Store

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))


class SignInRequired(Exception):
    pass


def create_app(config: Config, store: Store, generator: ReportGenerator | None, checks: dict[str, Check],
               session_secret: str | None = None) -> FastAPI:
    app = FastAPI(title="reports", description="Analytical reports: portal and API")
    app.add_middleware(SessionMiddleware, secret_key=session_secret or secrets.token_urlsafe(32),
                       session_cookie="reports_session", same_site="lax", https_only=False, max_age=12 * 3600)
    app.include_router(ops_router(checks))
    users = {u.username: u for u in config.users}

    def current_user(request: Request) -> User:
        user = users.get(request.session.get("user", ""))
        if user is None:
            raise SignInRequired()
        return user

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, _: SignInRequired) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "unauthenticated", "detail": "sign in first"}, status_code=401)
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        return JSONResponse({"error": {404: "not_found", 403: "forbidden"}.get(error.status_code, "error"),
                             "detail": error.detail}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> Response:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": "bad_request", "detail": detail}, status_code=400)

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/reports", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/reports") -> Response:
        return TEMPLATES.TemplateResponse(request, "login.html", {"next": next, "user": None})

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request, username: str = Form(), password: str = Form(),
                    next: str = Form("/reports")) -> Response:
        user = config.authenticate(username, password)
        if user is None:
            return TEMPLATES.TemplateResponse(request, "login.html", {
                "next": next, "user": None, "error": "Wrong user name or password."}, status_code=401)
        request.session.clear()
        request.session["user"] = user.username
        # only local paths: an open redirect would make the sign-in page a phishing relay
        return RedirectResponse(next if next.startswith("/") and not next.startswith("//") else "/reports",
                                status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/static/vega-embed.js", include_in_schema=False)
    async def vega_js() -> Response:
        return Response(vega_embed_bundle(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    pages = APIRouter()

    @pages.get("/reports", response_class=HTMLResponse)
    async def report_list(request: Request, user: User = Depends(current_user)) -> Response:
        reports = await store.list_reports(user.tenant)
        return TEMPLATES.TemplateResponse(request, "list.html", {"user": user, "reports": reports})

    async def owned(report_id: str, user: User) -> dict:
        report = await store.report(report_id, user.tenant)
        if report is None:
            raise HTTPException(404, f"no report {report_id}")
        return report

    @pages.get("/reports/{report_id}.pdf")
    async def pdf(report_id: str, user: User = Depends(current_user)) -> Response:
        data = await store.pdf(report_id, user.tenant)
        if data is None:
            raise HTTPException(404, f"no report {report_id}")
        return Response(data, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="report-{report_id}.pdf"'})

    @pages.get("/reports/{report_id}", response_class=HTMLResponse)
    async def report_page(request: Request, report_id: str, user: User = Depends(current_user)) -> Response:
        report = await owned(report_id, user)
        charts = json.dumps([{"id": c["id"], "spec": c["spec"]} for c in report["charts"]]).replace("</", "<\\/")
        return TEMPLATES.TemplateResponse(request, "report.html", {"user": user, "r": report, "charts_json": charts})

    async def figure_rows(report: dict, ref: str) -> tuple[str, list[dict]]:
        for passage in report["passages"]:
            if passage["chunk_id"] == ref:
                return f"Passage {ref}: {passage['title']}", [passage]
        figure = next((f for f in report["kpis"] + report["anomalies"] if f["id"] == ref), None)
        if figure is None:
            raise HTTPException(404, f"no figure {ref} in this report")
        scope = Scope(report["tenant"], datetime.fromisoformat(report["period_start"]),
                      datetime.fromisoformat(report["period_end"]))
        return figure["label"], await store.rows(scope, **figure["drill"])

    @pages.get("/reports/{report_id}/figures/{ref}", response_class=HTMLResponse)
    async def figure_page(request: Request, report_id: str, ref: str, user: User = Depends(current_user)) -> Response:
        label, rows = await figure_rows(await owned(report_id, user), ref)
        return TEMPLATES.TemplateResponse(request, "rows.html", {"user": user, "report_id": report_id,
                                                                 "label": label, "rows": rows})

    @pages.get("/api/reports")
    async def api_reports(user: User = Depends(current_user)) -> list[dict]:
        return jsonable_encoder([dict(r) for r in await store.list_reports(user.tenant)])

    @pages.get("/api/reports/{report_id}")
    async def api_report(report_id: str, user: User = Depends(current_user)) -> dict:
        return await owned(report_id, user)

    @pages.get("/api/reports/{report_id}/figures/{ref}")
    async def api_figure(report_id: str, ref: str, user: User = Depends(current_user)) -> dict:
        label, rows = await figure_rows(await owned(report_id, user), ref)
        return jsonable_encoder({"figure": ref, "label": label, "rows": rows})

    @pages.post("/api/definitions/{name}/run")
    async def run(name: str, period_end: datetime | None = None, user: User = Depends(current_user)) -> dict:
        """Generates (and delivers) a definition's report now, for the period ending at `period_end` (default: now)."""
        try:
            definition = config.definition(name)
        except KeyError:
            raise HTTPException(404, f"no report definition {name}") from None
        if definition.tenant != user.tenant or generator is None:
            raise HTTPException(404, f"no report definition {name}")
        end = period_end or datetime.now(UTC)
        report, _, outcomes = await generator.generate(definition, end if end.tzinfo else end.replace(tzinfo=UTC))
        return {"report_id": report["report_id"], "portal_url": report["portal_url"], "deliveries": outcomes,
                "removed_sentences": len(report["removed"])}

    app.include_router(pages)
    return app
