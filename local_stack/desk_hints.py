"""What `make desk` prints so a newcomer can read the notices the desk issued.

The notices go to a Pub/Sub topic and a `notices` table on the local stack's emulators,
whose ports are picked at start: `reading_notices` names them and gives a one-liner for
each (docs/desk.md, "Try it").
"""

import shlex
from collections.abc import Mapping


def reading_notices(
    env: Mapping[str, str], project: str, dataset: str, subscription: str
) -> list[str]:
    """Lines to print: where the notices are, and a command that reads each place.

    `env` is the stack's emulator environment (`LocalStack.env`: PUBSUB_EMULATOR_HOST,
    BIGQUERY_EMULATOR_HOST). The topic's one-liner pulls without acknowledging, so the
    messages stay on the subscription (they come back after its ack deadline).
    """
    pubsub, bigquery = env["PUBSUB_EMULATOR_HOST"], env["BIGQUERY_EMULATOR_HOST"]
    path = f"projects/{project}/subscriptions/{subscription}"
    # Double quotes inside: the shell quotes each one-liner in single ones.
    read_topic = (
        "from local_stack.services import pubsub_clients; "
        f'_, sub = pubsub_clients("{pubsub}"); '
        f'[print(m.message.data.decode()) for m in sub.pull(subscription="{path}", '
        "max_messages=20, timeout=10).received_messages]"
    )
    table = f"{project}.{dataset}.notices"
    query = f"SELECT notice_id, license_plate, reviewer, decided_at FROM `{table}`"
    read_table = (
        "from section_speed.clients.warehouse import Warehouse; "
        f'[print(row) for row in Warehouse("{project}", "{dataset}").query("{query}")]'
    )
    return [
        f"desk: notices are published to subscription {subscription} on the Pub/Sub emulator "
        f"at {pubsub} and written to table {table} on the BigQuery emulator at {bigquery}",
        f"desk: read the topic:  .venv/bin/python -c {shlex.quote(read_topic)}",
        f"desk: read the table:  BIGQUERY_EMULATOR_HOST={bigquery} "
        f".venv/bin/python -c {shlex.quote(read_table)}",
    ]
