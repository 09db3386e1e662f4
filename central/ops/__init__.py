"""Collection O&M: coverage, success, timeliness and accuracy figures, the worklist of
failing meters, gateway health, the reading-day readiness check, and commands to gateways.

```python
from central.ops import daily_figures, gateway_health, readiness, worklist

with engine.connect() as conn:
    daily_figures(conn, date(2026, 12, 1), by="gateway")   # one row per gateway
    worklist(conn, date(2026, 12, 1), limit=100)            # failing meters, cause, remedies
    gateway_health(conn)                                    # births, deaths, backlog, warnings
    readiness(conn, date(2026, 12, 1))                      # what would not bill cleanly
```

The rules (reading zone, deadline, which reading is expected, what passed VEE means) are
an :class:`OpsSettings`; docs/operations.md explains every figure, cause and problem.
"""

from central.ops.figures import (
    FIGURES,
    GROUPINGS,
    daily_figures,
    figure,
    gateway_health,
    readiness,
    worklist,
)
from central.ops.settings import (
    PASSED_VEE_STATUSES,
    OpsSettings,
    OpsSettingsError,
    ReadingDay,
)
from central.ops.worklist import CAUSES, MAX_WORKLIST_LIMIT

__all__ = [
    "CAUSES",
    "FIGURES",
    "GROUPINGS",
    "MAX_WORKLIST_LIMIT",
    "PASSED_VEE_STATUSES",
    "OpsSettings",
    "OpsSettingsError",
    "ReadingDay",
    "daily_figures",
    "figure",
    "gateway_health",
    "readiness",
    "worklist",
]
