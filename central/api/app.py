"""The application factory: ``create_app()`` builds the back-office API.

``uvicorn --factory central.api.app:create_app`` (what ``central api serve`` runs) calls it
with no arguments: settings from ``M2C_*`` (``central.settings``), an engine on
``M2C_DATABASE_URL``. Tests pass their own settings and engine.

Composition: request id (outermost) → body size limit → NUL refusal → FastAPI (error
handlers, routers under ``/api/v1``, ``/healthz``). OpenAPI is at
``/api/v1/openapi.json``, the interactive docs at ``/api/v1/docs``. At start-up the factory
refuses to build an app in which a route declares no roles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

import central
from central import audit
from central.api import errors
from central.api.deps import READ_METHODS, ApiConfig, ApiState, ObjectNotFound
from central.api.middleware import BodyLimitMiddleware, RejectNulMiddleware, RequestIdMiddleware
from central.api.routes import audit as audit_routes
from central.api.routes import auth, commands, gateways, meters, ops, readings, users, vee
from central.api.routing import API_PREFIX, ApiRouter, route_table
from central.settings import Settings

__all__ = ["API_PREFIX", "ROUTERS", "create_app", "undeclared_routes"]

log = logging.getLogger(__name__)

#: Every router of the API, mounted under /api/v1 (``health`` at the root).
ROUTERS: Final[tuple[ApiRouter, ...]] = (
    auth.router,
    gateways.router,
    ops.gateway_health_router,
    meters.router,
    readings.router,
    vee.router,
    ops.router,
    commands.router,
    users.router,
    audit_routes.router,
)


def undeclared_routes(app: FastAPI) -> list[str]:
    """Operations of ``app`` that declare no roles (must be none)."""
    return [f"{e.method} {e.path}" for e in route_table(app) if not e.roles]


def _refused_write(request: Request, exc: errors.ApiError) -> bool:
    if request.method in READ_METHODS or getattr(request.state, "user", None) is None:
        return False
    return exc.status == 403 or isinstance(exc, ObjectNotFound)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    config: ApiConfig | None = None,
    command_publisher: Any = None,
    ops_settings: Any = None,
) -> FastAPI:
    """The API application. Without ``engine`` it makes one from ``settings`` and disposes
    of it at shutdown; without ``ops_settings`` the O&M rules come from ``M2C_OPS_*``;
    without ``command_publisher`` commands go out over MQTT (``central.api.services``);
    migrations are not run here (``central api serve`` runs them once
    before starting workers)."""
    from central.db import make_engine
    from central.ops import OpsSettings

    settings = settings or Settings.from_env()
    config = config or ApiConfig()
    owns_engine = engine is None
    state = ApiState(
        settings=settings,
        engine=engine if engine is not None else make_engine(settings.database_url),
        config=config,
        command_publisher=command_publisher,
        ops_settings=ops_settings or OpsSettings.from_env(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        syncer = None
        if config.command_sync_s:
            syncer = asyncio.create_task(_sync_command_results(state.engine, config.command_sync_s))
        try:
            yield
        finally:
            if syncer is not None:
                syncer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await syncer
            if owns_engine:
                state.engine.dispose()

    app = FastAPI(
        title="meter2cash central API",
        version=central.__version__,
        description=(
            "The back-office API of meter2cash: gateways, meters, readings with VEE "
            "status, VEE exceptions, collection O&M figures, commands, users and the "
            "audit log. Log in at POST /api/v1/auth/token (OAuth2 password flow); service "
            "accounts send X-API-Key. Every error is "
            '{"error": {"code", "message", "detail"}}.'
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        swagger_ui_oauth2_redirect_url=f"{API_PREFIX}/docs/oauth2-redirect",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.api = state
    errors.install(app)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.ApiError)
        if _refused_write(request, exc):
            await run_in_threadpool(_record_refusal, state.engine, request, exc)
        return errors.error_response(exc.status, exc.code, exc.message, exc.detail, exc.headers)

    app.add_exception_handler(errors.ApiError, api_error)

    for router in (*ROUTERS, auth.health):
        app.include_router(router.router)

    missing = undeclared_routes(app)
    if missing:
        raise RuntimeError(f"routes without declared roles: {', '.join(missing)}")

    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost
    return app


async def _sync_command_results(engine: Engine, every_s: float) -> None:
    """Keep command statuses current for GET /commands: fold the gateways' results in and
    expire overdue commands, every ``every_s`` seconds. Idempotent, so every API worker may
    run it; a failure is logged and retried, never fatal."""
    from central.commands import sync_results

    def sync() -> None:
        with engine.begin() as conn:
            sync_results(conn)

    while True:
        try:
            await run_in_threadpool(sync)
        except Exception:  # keep serving: the next round retries
            log.exception("folding command results failed; retrying in %s s", every_s)
        await asyncio.sleep(every_s)


def _record_refusal(engine: Engine, request: Request, exc: errors.ApiError) -> None:
    """A refused write is a security event: one audit row, outcome ``denied``."""
    user = request.state.user
    route = request.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    object_id = next(iter(request.path_params.values()), None)
    with engine.begin() as conn:
        audit.record(
            conn,
            actor=user.name,
            actor_role=user.role,
            action=extra.get("x-action") or "unknown",
            outcome="denied",
            method=request.method,
            route=getattr(route, "path", request.url.path),
            object_id=None if object_id is None else str(object_id),
            after={"status": exc.status, "code": exc.code, "message": exc.message},
            request_id=getattr(request.state, "request_id", None),
        )
