"""`GET /v1/sessions/{id}/parameters`: the per-breath ventilation parameters of a session.

The worker appends one entry per breath to `eitmon:parameters:{sid}` (`breath` policy; the
entry's fields and codec are in `service.contract`). Pages follow the stream: `since` is the
id of the last entry already read (exclusive; none: from the oldest kept), `next` the id to
pass for the following page (null when this page was not full).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from service.auth import Principal, require_session
from service.contract.codecs import decode_parameters, text
from service.contract.keys import parameters_key
from service.contract.tokens import VOLUMES_READ
from service.deps import get_redis, session_status
from service.errors import AUTH_RESPONSES, SESSION_RESPONSES

router = APIRouter(tags=["sessions"])

MAX_LIMIT = 1000
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

BREATH_EXAMPLE: dict[str, Any] = {
    "index": 3, "start_s": 13.2, "end_inspiration_s": 15.1, "end_s": 17.6,
    "seq": {"start": 264, "end_inspiration": 302, "end": 352},
    "preview": {"method": "tikhonov", "tiv": 41.7, "eeli": 3.2, "left_pct": 48.9,
                "cov_z_pct": 51.0, "gi": 0.41, "...": "every field of docs/ventilation.md"},
    "tidal": {"method": "d2ip", "tiv": 38.4, "left_pct": 49.6, "cov_x_pct": 50.8,
              "...": "the regional fields"}}


PAGE_EXAMPLE: dict[str, Any] = {
    "entries": [{"id": "1767225617600-0", "seq": 352, "worker": "worker-a1", "epoch": 1,
                 "breath": BREATH_EXAMPLE}],
    "next": None}


class ParametersItem(BaseModel):
    id: str = Field(description="stream id of the entry (pass as `since` to read after it)")
    seq: int = Field(description="the breath's last frame (end of expiration)")
    worker: str
    epoch: int
    breath: dict[str, Any] = Field(description="the breath's parameters (docs/worker.md, "
                                               "\"Parameters stream\")",
                                   json_schema_extra={"example": BREATH_EXAMPLE})


class ParametersPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [PAGE_EXAMPLE]})
    entries: list[ParametersItem]
    next: str | None = Field(description="`since` for the next page; null when this page "
                                         "was not full")


@router.get("/v1/sessions/{sid}/parameters", response_model=ParametersPage,
            summary="Per-breath ventilation parameters",
            responses={**AUTH_RESPONSES, 404: SESSION_RESPONSES[404]})
async def get_parameters(
    sid: str, request: Request,
    since: str | None = Query(None, pattern=_STREAM_ID.pattern,
                              description="stream id `<ms>-<seq>` of the last entry read "
                                          "(exclusive); none: from the oldest kept"),
    limit: int = Query(100, ge=1, le=MAX_LIMIT, description="entries per page"),
    _: Principal = Depends(require_session(VOLUMES_READ)),
) -> ParametersPage:
    """One breath per entry, oldest first, from the session's capped parameters stream."""
    redis = get_redis(request)
    await session_status(redis, sid)
    raw = await redis.xrange(parameters_key(sid), min="-" if since is None else f"({since}",
                             count=limit)
    entries = []
    for entry_id, fields in raw:
        try:
            p = decode_parameters(fields)
        except ValueError:
            continue  # a malformed entry is skipped, as the viewers' feed does
        entries.append(ParametersItem(id=text(entry_id), seq=p.seq, worker=p.worker,
                                      epoch=p.epoch, breath=p.breath))
    return ParametersPage(entries=entries,
                          next=text(raw[-1][0]) if len(raw) == limit else None)
