"""The web portal and API: sign-in, the signed-in tenant's reports, report pages with interactive charts and
drill-down from any figure to its source rows, PDF download.

Two kinds of identity: the JSON API under /api takes bearer API keys (`platform_common.auth`: `read` to look,
`write` to run a definition), the HTML portal takes a server-side session made at sign-in (`page_session`,
`json_session`). Either way the tenant is the credential's. Every lookup is by report id AND that tenant: another
tenant's report answers 404, exactly like a report that does not exist, so ids cannot be probed. Forms (sign-in,
sign-out) must come from the portal's own origin, and sign-out also carries the session's CSRF token.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from platform_common.auth import KeyStore, Principal, install_auth, require
from platform_common.limits import BodyLimit
from platform_common.ops import Check, ops_router

from .charts import vega_embed_bundle
from .config import Config
from .reporter import Reporter
from .settings import ReportsSettings
from .signin import ATTEMPTS, Authenticator, LoginLimits, credential_fingerprint
from .store import Scope, Store

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
SESSION_COOKIE = "reports_session"
# routes anyone may call: the sign-in form, the chart library, and the ops endpoints (probes and Prometheus)
PUBLIC_PATHS = frozenset({"/", "/login", "/static/vega-embed.js", "/healthz", "/readyz", "/metrics"})
# no framing (clickjacking of the forms), no MIME sniffing, no report URLs leaking to other sites in Referer
# path parameters as the store holds them: report ids are UUIDs, refs are figure or chunk ids
ReportId = Annotated[str, PathParam(max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
Ref = Annotated[str, PathParam(max_length=700, pattern=r"^[^\x00]+$")]
_SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


class SignInRequired(Exception):
    def __init__(self, json_answer: bool):
        self.json_answer = json_answer


@dataclass(frozen=True)
class Session:
    username: str
    tenant: str
    csrf: str
    token: str


def session_policy(route: APIRoute) -> bool:
    """True when `route` requires a portal session (read back by the authorization tests, like `route_role`)."""
    pending = list(route.dependant.dependencies)
    while pending:
        dep = pending.pop()
        if getattr(dep.call, "__session_policy__", False):
            return True
        pending.extend(dep.dependencies)
    return False


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def create_app(config: Config, store: Store, reporter: Reporter | None, checks: dict[str, Check],
               settings: ReportsSettings | None = None, keys: KeyStore | None = None) -> FastAPI:
    """`keys` (the API's key store) is read from API_KEYS / API_KEYS_FILE unless given."""
    settings = settings or ReportsSettings()
    app = FastAPI(title="reports", description="Analytical reports: portal (session sign-in) and API "
                  "(`Authorization: Bearer pk_...`, the tenant is the key's)")
    install_auth(app, keys)
    app.add_middleware(BodyLimit, max_bytes=settings.reports_max_body_bytes)
    app.include_router(ops_router(checks))
    authenticator = Authenticator(config.users)
    limits = LoginLimits(settings.reports_login_failures_per_address, settings.reports_login_failures_per_user,
                         settings.reports_login_window_seconds)
    app.state.authenticator, app.state.login_limits = authenticator, limits
    portal_origin = _origin(settings.reports_portal_url)

    @app.middleware("http")
    async def security_headers(request: Request, call_next) -> Response:
        response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _session(request: Request, json_answer: bool) -> Session:
        token = request.cookies.get(SESSION_COOKIE, "")
        row = await store.session(token) if 20 <= len(token) <= 100 else None
        user = authenticator.user(row["username"]) if row else None
        # a removed user, a user moved to another tenant or a changed password ends the session
        if row is None or user is None or user.tenant != row["tenant"] \
                or not hmac.compare_digest(credential_fingerprint(user), row["credential"]):
            raise SignInRequired(json_answer)
        return Session(user.username, user.tenant, row["csrf"], token)

    async def page_session(request: Request) -> Session:
        return await _session(request, json_answer=False)

    async def json_session(request: Request) -> Session:
        return await _session(request, json_answer=True)

    page_session.__session_policy__ = json_session.__session_policy__ = True  # type: ignore[attr-defined]

    def same_origin(request: Request) -> None:
        """Refuses a form posted from another site (CSRF): the browser's Origin (or Referer) must be this portal."""
        sent = request.headers.get("origin") or _origin(request.headers.get("referer") or "")
        allowed = {portal_origin, *(f"{scheme}://{request.headers.get('host', '')}".lower()
                                    for scheme in ("http", "https"))}
        if not sent or sent.lower() not in allowed:
            raise HTTPException(403, "a form must be posted from the portal's own pages (Origin check)")

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, error: SignInRequired) -> Response:
        if error.json_answer:
            return JSONResponse({"error": "unauthorized", "detail": "sign in first"}, status_code=401)
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        return JSONResponse({"error": {404: "not_found", 403: "forbidden"}.get(error.status_code, "error"),
                             "detail": error.detail}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> Response:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": "bad_request", "detail": detail[:1000]}, status_code=400)

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/reports", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: Annotated[str, Query(max_length=2048)] = "/reports") -> Response:
        return TEMPLATES.TemplateResponse(request, "login.html", {"next": next, "user": None})

    @app.post("/login", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    async def login(request: Request, username: Annotated[str, Form(max_length=128)],
                    password: Annotated[str, Form(max_length=1024)],
                    next: Annotated[str, Form(max_length=2048)] = "/reports") -> Response:
        address = request.client.host if request.client else "unknown"
        wait = limits.retry_after(address, username)
        if wait is not None:
            ATTEMPTS.labels("limited").inc()
            return TEMPLATES.TemplateResponse(request, "login.html", {
                "next": next, "user": None, "error": "Too many failed sign-ins: try again later."},
                status_code=429, headers={"Retry-After": str(int(wait) + 1)})
        user = await authenticator.authenticate(username, password)
        if user is None:
            ATTEMPTS.labels("failed").inc()
            limits.failed(address, username)
            return TEMPLATES.TemplateResponse(request, "login.html", {
                "next": next, "user": None, "error": "Wrong user name or password."}, status_code=401)
        ATTEMPTS.labels("succeeded").inc()
        limits.succeeded(username)
        if old := request.cookies.get(SESSION_COOKIE):  # a new sign-in never reuses a session (fixation)
            await store.end_session(old)
        token, _ = await store.create_session(user.username, user.tenant, credential_fingerprint(user),
                                              settings.reports_session_hours)
        # only local paths: an open redirect would make the sign-in page a phishing relay
        response = RedirectResponse(next if next.startswith("/") and not next.startswith(("//", "/\\"))
                                    else "/reports", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=int(settings.reports_session_hours * 3600), path="/",
                            secure=True, httponly=True, samesite="lax")
        return response

    @app.post("/logout", dependencies=[Depends(same_origin)])
    async def logout(csrf: Annotated[str, Form(max_length=200)],
                     session: Session = Depends(page_session)) -> Response:
        if not hmac.compare_digest(csrf.encode(), session.csrf.encode()):  # bytes: str must be ASCII
            raise HTTPException(403, "the form's CSRF token does not match the session")
        await store.end_session(session.token)  # revoked server-side: the old cookie no longer works anywhere
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    @app.get("/static/vega-embed.js", include_in_schema=False)
    async def vega_js() -> Response:
        return Response(vega_embed_bundle(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    async def owned(report_id: str, tenant: str) -> dict:
        report = await store.report(report_id, tenant)
        if report is None:
            raise HTTPException(404, f"no report {report_id}")
        return report

    async def figure_rows(report: dict, ref: str) -> tuple[str, list[dict]]:
        for passage in report["passages"]:
            if passage["chunk_id"] == ref:
                return f"Passage {ref}: {passage['title']}", [passage]
        figure = next((f for f in report["kpis"] + report["anomalies"] if f["id"] == ref), None)
        if figure is None:
            raise HTTPException(404, f"no figure {ref} in this report")
        # the rows as of the moment the figures were computed: late rows do not change a made report's drill-down
        as_of = report["lineage"].get("as_of")
        scope = Scope(report["tenant"], datetime.fromisoformat(report["period_start"]),
                      datetime.fromisoformat(report["period_end"]),
                      as_of=datetime.fromisoformat(as_of) if as_of else None)
        return figure["label"], await store.rows(scope, **figure["drill"])

    # --- the portal: HTML pages (and the drill-down rows their script fetches), for a signed-in user ----------

    pages = APIRouter()

    @pages.get("/reports", response_class=HTMLResponse)
    async def report_list(request: Request, user: Session = Depends(page_session)) -> Response:
        reports = await store.list_reports(user.tenant)
        return TEMPLATES.TemplateResponse(request, "list.html", {"user": user, "reports": reports})

    @pages.get("/reports/{report_id}.pdf")
    async def pdf(report_id: ReportId, user: Session = Depends(page_session)) -> Response:
        data = await store.pdf(report_id, user.tenant)
        if data is None:
            raise HTTPException(404, f"no report {report_id}")
        return Response(data, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="report-{report_id}.pdf"'})

    @pages.get("/reports/{report_id}", response_class=HTMLResponse)
    async def report_page(request: Request, report_id: ReportId, user: Session = Depends(page_session)) -> Response:
        report = await owned(report_id, user.tenant)
        charts = json.dumps([{"id": c["id"], "spec": c["spec"]} for c in report["charts"]]).replace("</", "<\\/")
        return TEMPLATES.TemplateResponse(request, "report.html", {"user": user, "r": report, "charts_json": charts})

    @pages.get("/reports/{report_id}/figures/{ref}", response_class=HTMLResponse)
    async def figure_page(request: Request, report_id: ReportId, ref: Ref,
                          user: Session = Depends(page_session)) -> Response:
        label, rows = await figure_rows(await owned(report_id, user.tenant), ref)
        return TEMPLATES.TemplateResponse(request, "rows.html", {"user": user, "report_id": report_id,
                                                                 "label": label, "rows": rows})

    @pages.get("/reports/{report_id}/rows/{ref:path}")
    async def figure_json(report_id: ReportId, ref: Ref, user: Session = Depends(json_session)) -> dict:
        label, rows = await figure_rows(await owned(report_id, user.tenant), ref)
        return jsonable_encoder({"figure": ref, "label": label, "rows": rows})

    # --- the API: bearer keys -----------------------------------------------------------------------------------

    @pages.get("/api/reports")
    async def api_reports(who: Principal = Depends(require("read"))) -> list[dict]:
        return jsonable_encoder([dict(r) for r in await store.list_reports(who.tenant)])

    @pages.get("/api/reports/{report_id}")
    async def api_report(report_id: ReportId, who: Principal = Depends(require("read"))) -> dict:
        return await owned(report_id, who.tenant)

    @pages.get("/api/reports/{report_id}/figures/{ref}")
    async def api_figure(report_id: ReportId, ref: Ref, who: Principal = Depends(require("read"))) -> dict:
        label, rows = await figure_rows(await owned(report_id, who.tenant), ref)
        return jsonable_encoder({"figure": ref, "label": label, "rows": rows})

    @pages.post("/api/definitions/{name}/run")
    async def run(name: Annotated[str, PathParam(max_length=64)], period_end: datetime | None = None,
                  who: Principal = Depends(require("write"))) -> dict:
        """Makes a new version of a definition's report for the period ending at `period_end` (default: now), and
        publishes and delivers it; earlier versions are kept."""
        try:
            definition = config.definition(name)
        except KeyError:
            raise HTTPException(404, f"no report definition {name}") from None
        if definition.tenant != who.tenant or reporter is None:
            raise HTTPException(404, f"no report definition {name}")
        end = period_end or datetime.now(UTC)
        report_id, deliveries = await reporter.run_now(definition, end if end.tzinfo else end.replace(tzinfo=UTC))
        report = await store.report(report_id, who.tenant)
        if report is None:  # generation or publication failed: the run is retried, its error is in the run table
            raise HTTPException(503, f"report {report_id} is not made yet; it is retried")
        return {"report_id": report_id, "version": report["version"], "portal_url": report["portal_url"],
                "deliveries": deliveries, "removed_sentences": len(report["removed"])}

    app.include_router(pages)
    return app
