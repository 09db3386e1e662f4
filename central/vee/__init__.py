"""Validation, estimation and editing (VEE) of the readings central stores.

The rules V1–V16 are data (:mod:`central.vee.rules`), their parameters have effective dates
(:mod:`central.vee.parameters`). Readings are checked in two places:

* as they arrive — :class:`InlineValidator` runs the per-reading rules inside ingestion's
  transaction and gives each reading its ``vee_status``;
* per meter-day — :func:`close_day` runs the rules that need a whole day and estimates the
  missing curve points into ``estimated_readings`` (never into ``readings``).

:func:`validate_pending` catches up readings stored while VEE was off; :func:`rerun`
re-validates a range after parameters changed. Every failure is a row in
``vee_exceptions``, which operators resolve or override (:func:`resolve_exception`,
:func:`override_exception`). ``docs/vee.md`` is the guide.

Errors (:mod:`central.vee.errors`)::

    VeeError (ValueError)
    ├── ExceptionNotFoundError   404
    ├── ExceptionClosedError     409
    └── InvalidVeeRequestError   422
"""

from central.vee.day import DEFAULT_ZONE, channel_series, close_day, day_window
from central.vee.errors import (
    ExceptionClosedError,
    ExceptionNotFoundError,
    InvalidVeeRequestError,
    VeeError,
)
from central.vee.exceptions import (
    get_exception,
    list_exceptions,
    override_exception,
    reading_status,
    resolve_exception,
    rule_table,
)
from central.vee.inline import InlineValidator, ReadingColumns
from central.vee.meters import meter_settings, set_meter_settings
from central.vee.parameters import RuleSet, load_rule_set, set_parameter
from central.vee.rerun import rerun, validate_pending
from central.vee.rules import RULES, STATUSES, Severity, Status, rules_markdown

__all__ = [
    "DEFAULT_ZONE",
    "RULES",
    "STATUSES",
    "ExceptionClosedError",
    "ExceptionNotFoundError",
    "InlineValidator",
    "InvalidVeeRequestError",
    "ReadingColumns",
    "RuleSet",
    "Severity",
    "Status",
    "VeeError",
    "channel_series",
    "close_day",
    "day_window",
    "get_exception",
    "list_exceptions",
    "load_rule_set",
    "meter_settings",
    "override_exception",
    "reading_status",
    "rerun",
    "resolve_exception",
    "rule_table",
    "rules_markdown",
    "set_meter_settings",
    "set_parameter",
    "validate_pending",
]
