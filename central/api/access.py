"""Object-level access: which gateways and meters a user may see and act on, in one place.

The scoping model
-----------------
A user's **scope** is a set of gateways and a set of transformer areas (``user_scopes``).

* An **empty scope** means the whole system (head-office teams, admins, supervisors).
* A **meter** is visible when its gateway is in the user's gateways *or* its transformer
  area is in the user's areas (an O&M technician responsible for areas 台区 A and B sees
  exactly the households of A and B, whichever concentrator reads them).
* A **gateway** is visible when it is in the user's gateways or reads at least one meter
  of the user's areas (the technician needs to see the concentrator serving the area).
* **Acting on a whole gateway** (a command without a meter list: backfill or clock sync of
  every meter on it) needs the gateway itself in the user's gateways: it touches other
  areas' meters too. A command naming meters needs each of them visible.
* A **transformer area** named in a query (``area=``) must be one of the user's areas.

How it is enforced
------------------
:func:`authorize_objects` is a dependency every route carries (``central.api.routing``
attaches it). It looks at the request's path parameters, query parameters and the
top-level keys of a JSON body, and checks every one whose name is in :data:`RESOLVERS`
(``gateway``, ``meter``, ``meters``, ``area``, ``exception_id``, ``command_id``) against
the user's scope. An object outside the scope answers **404**, exactly like one that does
not exist, so a scoped user cannot probe for other areas' meter numbers. A test fails if a
route has a parameter that is neither a resolver nor declared as not naming an object
(:data:`NOT_OBJECT_REFERENCES`).

Routes that aggregate over meters (O&M figures, the worklist, readiness) are declared
``narrow``: a scoped user must pass ``area=`` (one of theirs) or ``gateway=`` (one in their
gateways, not merely one serving their area), so a figure never mixes in other scopes'
meters; without either the answer is 422 ``scope_required`` naming what to pass.

Lists are filtered by the same rules in SQL (:meth:`Scope.meter_clause`,
:meth:`Scope.gateway_clause`) or, for lists another module computes, by
:meth:`Scope.filter_rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import ColumnElement, exists, false, or_, select, true
from sqlalchemy.engine import Connection

from central.db.schema import gateways, meters

__all__ = [
    "NOT_OBJECT_REFERENCES",
    "RESOLVERS",
    "AccessDenied",
    "Scope",
    "ScopeRequired",
    "check_narrowed",
    "check_references",
]


class AccessDenied(Exception):
    """An object the user may not see or act on (answered as 404 not_found)."""

    def __init__(self, kind: str, value: object) -> None:
        super().__init__(f"{kind} {value} not found")
        self.kind = kind
        self.value = value


class ScopeRequired(Exception):
    """A scoped user asked for an aggregate without narrowing it to their scope."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a user may see: empty = everything."""

    gateways: frozenset[str] = field(default_factory=frozenset)
    areas: frozenset[str] = field(default_factory=frozenset)

    @property
    def unrestricted(self) -> bool:
        return not self.gateways and not self.areas

    def as_dict(self) -> dict[str, list[str]]:
        return {"gateways": sorted(self.gateways), "areas": sorted(self.areas)}

    # -- SQL ---------------------------------------------------------------------------------

    def meter_clause(self) -> ColumnElement[bool]:
        """A condition on the ``meters`` table: the meter is visible."""
        if self.unrestricted:
            return true()
        conditions: list[ColumnElement[bool]] = []
        if self.gateways:
            conditions.append(meters.c.gateway.in_(sorted(self.gateways)))
        if self.areas:
            conditions.append(meters.c.transformer_area.in_(sorted(self.areas)))
        return or_(*conditions)

    def meter_id_clause(self, column: Any) -> ColumnElement[bool]:
        """A condition on any column holding a meter id (readings.meter, events.meter)."""
        if self.unrestricted:
            return true()
        clause: ColumnElement[bool] = column.in_(select(meters.c.meter).where(self.meter_clause()))
        return clause

    def gateway_clause(self, column: Any = None) -> ColumnElement[bool]:
        """A condition on a gateway id column (default ``gateways.id``): it is visible."""
        if self.unrestricted:
            return true()
        column = gateways.c.id if column is None else column
        conditions: list[ColumnElement[bool]] = []
        if self.gateways:
            conditions.append(column.in_(sorted(self.gateways)))
        if self.areas:
            conditions.append(
                column.in_(
                    select(meters.c.gateway).where(
                        meters.c.transformer_area.in_(sorted(self.areas))
                    )
                )
            )
        return or_(*conditions) if conditions else false()

    # -- single objects ----------------------------------------------------------------------

    def meter_visible(self, conn: Connection, meter: str) -> bool:
        if self.unrestricted:
            return True
        return bool(
            conn.execute(
                select(exists().where(meters.c.meter == meter, self.meter_clause()))
            ).scalar()
        )

    def gateway_visible(self, conn: Connection, gateway: str) -> bool:
        if self.unrestricted or gateway in self.gateways:
            return True
        if not self.areas:
            return False
        return bool(
            conn.execute(
                select(
                    exists().where(
                        meters.c.gateway == gateway,
                        meters.c.transformer_area.in_(sorted(self.areas)),
                    )
                )
            ).scalar()
        )

    def gateway_actionable(self, gateway: str) -> bool:
        return self.unrestricted or gateway in self.gateways

    def area_visible(self, area: str) -> bool:
        return self.unrestricted or area in self.areas

    # -- lists computed elsewhere ------------------------------------------------------------

    def filter_rows(
        self,
        conn: Connection,
        rows: Sequence[Any],
        *,
        meter: Callable[[Any], str | None] | None = None,
        gateway: Callable[[Any], str | None] | None = None,
    ) -> list[Any]:
        """Keep the rows whose meter (or, without one, gateway) is visible."""
        if self.unrestricted:
            return list(rows)
        meter_ids = {m for m in (meter(row) for row in rows) if m} if meter else set()
        gateway_ids = {g for g in (gateway(row) for row in rows) if g} if gateway else set()
        visible_meters = set()
        if meter_ids:
            visible_meters = set(
                conn.execute(
                    select(meters.c.meter).where(
                        meters.c.meter.in_(sorted(meter_ids)), self.meter_clause()
                    )
                ).scalars()
            )
        visible_gateways = {g for g in gateway_ids if self.gateway_visible(conn, g)}
        kept = []
        for row in rows:
            meter_id = meter(row) if meter else None
            if meter_id:
                if meter_id in visible_meters:
                    kept.append(row)
                continue
            gateway_id = gateway(row) if gateway else None
            if gateway_id and gateway_id in visible_gateways:
                kept.append(row)
        return kept


# -- resolvers: one per parameter name that names an object --------------------------------

Resolver = Callable[[Connection, Scope, Any, Mapping[str, Any]], None]


def _check_gateway(conn: Connection, scope: Scope, value: Any, request: Mapping[str, Any]) -> None:
    gateway = str(value)
    if not scope.gateway_visible(conn, gateway):
        raise AccessDenied("gateway", gateway)
    # A write naming a gateway but no meters acts on every meter of the gateway.
    acting = request.get("__write__", False)
    names_meters = request.get("meter") is not None or request.get("meters") is not None
    if acting and not names_meters and not scope.gateway_actionable(gateway):
        raise AccessDenied("gateway", gateway)


def _check_meter(conn: Connection, scope: Scope, value: Any, request: Mapping[str, Any]) -> None:
    if not scope.meter_visible(conn, str(value)):
        raise AccessDenied("meter", value)


def _check_meters(conn: Connection, scope: Scope, value: Any, request: Mapping[str, Any]) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        return  # the body model refuses it with a 422
    wanted = sorted({str(meter) for meter in value})
    visible = set(
        conn.execute(
            select(meters.c.meter).where(meters.c.meter.in_(wanted), scope.meter_clause())
        ).scalars()
    )
    for meter in wanted:
        if meter not in visible:
            raise AccessDenied("meter", meter)


def _check_area(conn: Connection, scope: Scope, value: Any, request: Mapping[str, Any]) -> None:
    if not scope.area_visible(str(value)):
        raise AccessDenied("transformer area", value)


def _check_exception(
    conn: Connection, scope: Scope, value: Any, request: Mapping[str, Any]
) -> None:
    from central.api.services import exception_meter

    meter = exception_meter(conn, value)
    if meter is None or not scope.meter_visible(conn, meter):
        raise AccessDenied("VEE exception", value)


def _check_command(conn: Connection, scope: Scope, value: Any, request: Mapping[str, Any]) -> None:
    from central.api.services import command_gateway

    gateway = command_gateway(conn, value)
    if gateway is None or not scope.gateway_visible(conn, gateway):
        raise AccessDenied("command", value)


#: Parameter name → the check of the object it names. Path, query and JSON body alike.
RESOLVERS: Final[dict[str, Resolver]] = {
    "gateway": _check_gateway,
    "meter": _check_meter,
    "meters": _check_meters,
    "area": _check_area,
    "exception_id": _check_exception,
    "command_id": _check_command,
}

#: Parameters that do not name a gateway or meter; a route parameter in neither table
#: fails ``tests/test_api_access.py`` (so a new ``meter_id`` cannot slip past the checks).
NOT_OBJECT_REFERENCES: Final = frozenset(
    {
        # paging, ranges and filters on values
        "limit",
        "after",
        "start",
        "end",
        "since",
        "until",
        "day",
        "reading_day",
        "by",
        "obis",
        "what",
        "status",
        "rule",
        "online",
        "kind",
        "days",
        "ttl_minutes",
        "vee_status",
        "reason",
        "value",
        "actor",
        "action",
        "object_type",
        "object_id",
        # login form and user administration (admin-only routes: no scope applies)
        "username",
        "password",
        "grant_type",
        "scope",
        "client_id",
        "client_secret",
        "name",
        "role",
        "disabled",
        "key_id",
        "gateways",
        "areas",
    }
)


def check_references(
    conn: Connection, scope: Scope, references: Iterable[tuple[str, Any]], *, write: bool
) -> None:
    """Check every (parameter name, value) that names an object; AccessDenied on the first
    one outside ``scope``."""
    if scope.unrestricted:
        return
    pairs = [(name, value) for name, value in references if name in RESOLVERS]
    context: dict[str, Any] = {name: value for name, value in pairs}
    context["__write__"] = write
    for name, value in pairs:
        if value is None:
            continue
        RESOLVERS[name](conn, scope, value, context)


def check_narrowed(scope: Scope, references: Iterable[tuple[str, Any]]) -> None:
    """For an aggregating route: a scoped user names one of their areas or one of their own
    gateways (the area itself is checked by its resolver); ScopeRequired otherwise."""
    if scope.unrestricted:
        return
    given = dict(references)
    if given.get("area"):
        return
    gateway = given.get("gateway")
    if gateway and scope.gateway_actionable(str(gateway)):
        return
    choices = [f"area={a}" for a in sorted(scope.areas)]
    choices += [f"gateway={g}" for g in sorted(scope.gateways)]
    raise ScopeRequired(
        "your access is limited to part of the system: narrow this request with one of "
        + ", ".join(choices)
    )
