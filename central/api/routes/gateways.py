"""Gateways (concentrators): list, one, and health."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query

from central.api import queries
from central.api.deps import Conn, CurrentUser
from central.api.errors import NotFound
from central.api.routing import (
    ALL_ROLES,
    API_PREFIX,
    After,
    ApiRouter,
    Limit,
    Page,
    PublicModel,
    decode_cursor,
    encode_cursor,
)

__all__ = ["router"]

router = ApiRouter(prefix=f"{API_PREFIX}/gateways", tags=["gateways"])


class GatewayPublic(PublicModel):
    id: str
    online: bool
    enrolled_at: datetime
    session: str | None
    last_birth_at: datetime | None
    last_death_at: datetime | None
    meter_count: int
    software_version: str | None = None
    log_depth: int | None = None
    oldest_unacked_s: int | None = None
    clock_offset_s: float | None = None


class GatewayDetailPublic(GatewayPublic):
    last_birth: dict[str, Any] | None = None


@router.get("", roles=ALL_ROLES, response_model=Page[GatewayPublic])
def list_gateways(
    conn: Conn,
    user: CurrentUser,
    online: Annotated[
        bool | None, Query(description="Only online (true) or offline (false).")
    ] = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[GatewayPublic]:
    """Gateways in your scope, by id."""
    cursor = decode_cursor(after, str)
    rows = queries.list_gateways(
        conn, user.scope, online=online, after=cursor[0] if cursor else None, limit=limit
    )
    items = [GatewayPublic.model_validate(row) for row in rows]
    next_cursor = encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
    return Page[GatewayPublic](items=items, next=next_cursor)


@router.get("/{gateway}", roles=ALL_ROLES, response_model=GatewayDetailPublic)
def get_gateway(conn: Conn, gateway: str) -> GatewayDetailPublic:
    """One gateway with its last birth (software, config and archive hashes, buffer)."""
    row = queries.get_gateway(conn, gateway)
    if row is None:
        raise NotFound(f"gateway {gateway} not found")
    return GatewayDetailPublic.model_validate(row)
