"""Tables for VEE: rule parameters, exceptions, estimates (issue 6).

Declared on central's one ``metadata`` (``central.db.schema``); the Alembic migration that
builds them is in ``central/db/migrations/versions``.
"""

from __future__ import annotations

from central.db.schema import metadata

__all__ = ["metadata"]
