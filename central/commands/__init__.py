"""Commands to gateways: issue, sign, publish and track them.

Central asks a gateway to read a meter now, walk back over missed slots (补抄), set meter
clocks, resend or resync its log, or publish a fresh birth. Each command is a row in the
``commands`` table, a :class:`~shared_protocol.wire.Command` signed with central's Ed25519
key (``M2C_COMMAND_KEY_PATH``) and a QoS 1 message on ``m2c/v1/gw/{gateway}/cmd``; the
gateway's signed result comes back through ingestion and :func:`sync_results` folds it in.

```python
from central.commands import MqttCommandPublisher, issue_command, load_command_key, sync_results

with MqttCommandPublisher(broker, load_command_key(settings.command_key_path)) as publisher:
    row = issue_command(engine, publisher, gateway="gw-0001", kind="read_now",
                        args={"meter": "000000001234", "what": "1-0:1.8.0"},
                        requested_by="ops:li.wei")
with engine.begin() as conn:
    sync_results(conn)                     # results in, overdue commands expired
    get_command(conn, row["id"])["status"]  # succeeded / failed / refused / expired / …
```

Errors::

    CommandError (ValueError)      the request cannot become a command; the message says why
    └── CommandKeyError            central's signing key is missing or unusable
    CommandPublishError (RuntimeError)  the broker did not take it (issue_command records
                                        the command as failed instead of raising this)
"""

from central.commands.errors import CommandError, CommandKeyError, CommandPublishError
from central.commands.issue import DEFAULT_TTL, build_args, issue_command
from central.commands.keys import create_command_key, load_command_key, public_key_pem_of
from central.commands.publisher import (
    CENTRAL_KEY_ID,
    CommandPublisher,
    MemoryPublisher,
    MqttCommandPublisher,
)
from central.commands.tracking import (
    MAX_LIST_LIMIT,
    command_dict,
    count_waiting,
    get_command,
    list_commands,
    sync_results,
)

__all__ = [
    "CENTRAL_KEY_ID",
    "DEFAULT_TTL",
    "MAX_LIST_LIMIT",
    "CommandError",
    "CommandKeyError",
    "CommandPublishError",
    "CommandPublisher",
    "MemoryPublisher",
    "MqttCommandPublisher",
    "build_args",
    "command_dict",
    "count_waiting",
    "create_command_key",
    "get_command",
    "issue_command",
    "list_commands",
    "load_command_key",
    "public_key_pem_of",
    "sync_results",
]
