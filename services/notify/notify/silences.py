"""Silences over HTTP, in the shape of Alertmanager's API v2 (`/api/v2/silences`, `/api/v2/silence/{id}`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from .routing import Matcher
from .store import Store


class PostableSilence(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: uuid.UUID | None = Field(None, description="Given: that silence is expired and replaced by this one.")
    matchers: list[Matcher] = Field(min_length=1)
    starts_at: AwareDatetime | None = Field(None, description="Default: now.")
    ends_at: AwareDatetime
    created_by: str = Field(min_length=1)
    comment: str = Field(min_length=1)


def error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def gettable(row) -> dict:
    now = row["now"]
    state = "expired" if row["ends_at"] <= now else "pending" if row["starts_at"] > now else "active"
    return {"id": str(row["id"]), "status": {"state": state}, "matchers": row["matchers"],
            "startsAt": row["starts_at"].isoformat(), "endsAt": row["ends_at"].isoformat(),
            "updatedAt": row["updated_at"].isoformat(), "createdBy": row["created_by"], "comment": row["comment"]}


def silences_router(store: Store) -> APIRouter:
    router = APIRouter(prefix="/api/v2", tags=["silences"])

    @router.post("/silences", summary="Create a silence (or replace the one named by `id`)")
    async def create(payload: Annotated[dict, Body(description=(
            "Alertmanager's PostableSilence: matchers [{name, value, isRegex, isEqual}], startsAt, endsAt, "
            "createdBy, comment"))]) -> JSONResponse:
        # validated here rather than by FastAPI: FastAPI 0.115 with pydantic 2.12 warns on aliased body models
        try:
            body = PostableSilence.model_validate(payload)
        except ValidationError as e:
            return bad_request(e.errors())
        starts_at = body.starts_at or datetime.now(UTC)
        if body.ends_at <= starts_at or body.ends_at <= datetime.now(UTC):
            return error(400, "bad_silence", "endsAt must be after startsAt and in the future")
        if body.id is not None and not await store.expire_silence(body.id):
            return error(404, "not_found", f"no active silence {body.id}")
        silence_id = await store.add_silence(body.matchers, starts_at, body.ends_at, body.created_by, body.comment)
        return JSONResponse({"silenceID": str(silence_id)})

    @router.get("/silences", summary="Every silence, with its state (active, pending or expired)")
    async def list_silences() -> list[dict]:
        return [gettable(row) for row in await store.silences()]

    @router.get("/silence/{silence_id}", summary="One silence")
    async def get(silence_id: uuid.UUID):
        row = await store.silence(silence_id)
        return gettable(row) if row else error(404, "not_found", f"no silence {silence_id}")

    @router.delete("/silence/{silence_id}", summary="Expire a silence now")
    async def expire(silence_id: uuid.UUID):
        if await store.expire_silence(silence_id):
            return JSONResponse({"silenceID": str(silence_id), "status": {"state": "expired"}})
        return error(404, "not_found", f"no active or pending silence {silence_id}")

    return router


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return bad_request(exc.errors())


def bad_request(errors) -> JSONResponse:
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error(400, "bad_request", f"{where}: {first.get('msg', 'invalid request')}" if where else
                 first.get("msg", "invalid request"))
