"""Silences over HTTP, in the shape of Alertmanager's API v2 (`/api/v2/silences`, `/api/v2/silence/{id}`).

Every route needs an API key (platform_common.auth): reading takes `read`, creating and expiring take `write`.
A silence belongs to the key's tenant: it mutes only that tenant's alerts, and only that tenant sees or expires it.
Its creator is the key, whatever the body says. Matchers are RE2 (routing.py), few and short, and a silence lasts
at most NOTIFY_SILENCE_MAX_DURATION.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException

from platform_common.auth import Principal, require

from .routing import Matcher
from .store import Store

MAX_MATCHERS = 32


class PostableSilence(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: uuid.UUID | None = Field(None, description="Given: that silence is expired and replaced by this one.")
    matchers: list[Matcher] = Field(min_length=1, max_length=MAX_MATCHERS)
    starts_at: AwareDatetime | None = Field(None, description="Default: now.")
    ends_at: AwareDatetime
    # accepted for Alertmanager clients, but the creator recorded is the API key that made the silence
    created_by: str | None = Field(None, max_length=200)
    comment: str = Field(min_length=1, max_length=1000)


def error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def gettable(row) -> dict:
    now = row["now"]
    state = "expired" if row["ends_at"] <= now else "pending" if row["starts_at"] > now else "active"
    return {"id": str(row["id"]), "status": {"state": state}, "matchers": row["matchers"],
            "startsAt": row["starts_at"].isoformat(), "endsAt": row["ends_at"].isoformat(),
            "updatedAt": row["updated_at"].isoformat(), "createdBy": row["created_by"], "comment": row["comment"]}


def silences_router(store: Store, max_duration: float) -> APIRouter:
    router = APIRouter(prefix="/api/v2", tags=["silences"])
    longest = timedelta(seconds=max_duration)

    @router.post("/silences", summary="Create a silence of the key's tenant (or replace the one named by `id`)")
    async def create(payload: Annotated[dict, Body(description=(
            "Alertmanager's PostableSilence: matchers [{name, value, isRegex, isEqual}] (RE2), startsAt, endsAt, "
            "comment; createdBy is taken from the API key"))],
            who: Principal = Depends(require("write"))) -> JSONResponse:
        # validated here rather than by FastAPI: FastAPI 0.115 with pydantic 2.12 warns on aliased body models
        try:
            body = PostableSilence.model_validate(payload)
        except ValidationError as e:
            return bad_request(e.errors())
        now = datetime.now(UTC)
        starts_at = body.starts_at or now
        if body.ends_at <= starts_at or body.ends_at <= now:
            return error(400, "bad_silence", "endsAt must be after startsAt and in the future")
        # a silence that outlives everyone's memory of it is how paging goes quiet for good
        if body.ends_at - max(starts_at, now) > longest or starts_at - now > longest:
            return error(400, "bad_silence", f"a silence lasts at most {max_duration / 3600:g} h and starts "
                                             "within that time")
        if body.id is not None and not await store.expire_silence(body.id, who.tenant):
            return error(404, "not_found", f"no active silence {body.id}")
        silence_id = await store.add_silence(who.tenant, body.matchers, starts_at, body.ends_at, who.key_id,
                                             body.comment)
        return JSONResponse({"silenceID": str(silence_id)})

    @router.get("/silences", summary="The key's tenant's silences, with their state (active, pending or expired)")
    async def list_silences(who: Principal = Depends(require("read"))) -> list[dict]:
        return [gettable(row) for row in await store.silences(who.tenant)]

    @router.get("/silence/{silence_id}", summary="One silence of the key's tenant")
    async def get(silence_id: uuid.UUID, who: Principal = Depends(require("read"))):
        row = await store.silence(silence_id, who.tenant)
        return gettable(row) if row else error(404, "not_found", f"no silence {silence_id}")

    @router.delete("/silence/{silence_id}", summary="Expire a silence of the key's tenant now")
    async def expire(silence_id: uuid.UUID, who: Principal = Depends(require("write"))):
        if await store.expire_silence(silence_id, who.tenant):
            return JSONResponse({"silenceID": str(silence_id), "status": {"state": "expired"}})
        return error(404, "not_found", f"no active or pending silence {silence_id}")

    return router


HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return bad_request(exc.errors())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": HTTP_CODES.get(exc.status_code, "http_error"), "detail": str(exc.detail)},
                            status_code=exc.status_code, headers=exc.headers)


def bad_request(errors) -> JSONResponse:
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error(400, "bad_request", f"{where}: {first.get('msg', 'invalid request')}" if where else
                 first.get("msg", "invalid request"))
