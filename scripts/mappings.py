"""Keeps a local stack's event source mappings delivering across emulator restarts, and proves it.

MiniStack persists each DynamoDB stream mapping's read position as an absolute record number, but not
the stream records nor their counter: after a restart the stream counts from 0 again while the mapping
waits at its old number, silently skipping that many new records (docs/local-aws.md). So:

- `reset_stream_positions` sets the persisted positions back to 0 before the emulator is started on a
  state directory;
- `prove` writes one probe item to each stream source table and sends one probe message to each queue
  source, each with a name of its own, then waits until the emulator's log shows every enabled
  mapping's function passed its source's probe (the readers log each probe's name as they let it
  pass: a batch that was under way before the probe was written does not count);
- `drain` does the same before a graceful stop, so that no change committed before it is still waiting
  in a stream when the emulator (which keeps no stream records across a restart) stops. Every stream reader and queue worker lets probes pass without acting on
  them (shared/store/src/probe.rs, shared/worker/src/sqs.rs).
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from pathlib import Path

PROBE_KEY = "probe#local-stack"
PROBE_ATTRIBUTE = "shop_probe"
PROOF_TIMEOUT_SECONDS = 60
# What MiniStack logs before a delivered batch's function output (services/lambda_svc.py, the ESM
# poller); the output runs to the emulator's next log line.
OUTPUT_HEADER = re.compile(r"^\S+ \S+ INFO \[lambda\] ESM: Lambda (?P<function>\S+) output:$")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
# The attribute of a probe item that names it (shared/store/src/probe.rs).
PROBE_NAME = "probe"


def log(message: str) -> None:
    print(f"[local-stack] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- before a start


def reset_stream_positions(state_dir: Path) -> int | None:
    """Sets every persisted DynamoDB stream position in `state_dir`/lambda.json to 0 and returns how
    many there were (None when there is no persisted Lambda state, i.e. a fresh start).

    The keys stay: a LATEST mapping without a position would anchor at the stream's end when first
    polled, skipping the records written before that. Records not delivered before the stop are lost
    either way (the orders sweep settles their orders)."""
    path = state_dir / "lambda.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    positions = state.get("payload", {}).get("dynamodb_stream_positions", {}).get("data", {})
    for key in positions:
        positions[key] = 0
    path.write_text(json.dumps(state))
    log(f"reset {len(positions)} stream positions of persisted event source mappings "
        "(emulator workaround, docs/local-aws.md)")
    return len(positions)


# ---------------------------------------------------------------- after a deploy


def stack_mappings(stack: str, cfn, lam) -> list[dict]:
    """Every event source mapping of the stack's functions (enabled or not)."""
    resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
    functions = [r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::Lambda::Function"]
    found = []
    for function in functions:
        found.extend(lam.list_event_source_mappings(FunctionName=function).get("EventSourceMappings", []))
    return found


def function_name(mapping: dict) -> str:
    return mapping["FunctionArn"].split(":function:")[-1].split(":")[0]


def source_name(mapping: dict) -> tuple[str, str]:
    """("dynamodb", table) or ("sqs", queue) from the mapping's source ARN."""
    arn = mapping["EventSourceArn"]
    service = arn.split(":")[2]
    if service == "dynamodb":
        return service, arn.split(":table/")[1].split("/stream/")[0]
    return service, arn.split(":")[-1]


def label(mapping: dict) -> str:
    service, source = source_name(mapping)
    return f"{function_name(mapping)} <- {source} ({service})"


def probe_item(dynamodb, table: str, name: str) -> dict:
    """The probe item `name` for `table`: its key attributes set to PROBE_KEY (0 for numbers),
    entity=probe."""
    description = dynamodb.describe_table(TableName=table)["Table"]
    types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
    item = {"entity": {"S": "probe"}, PROBE_NAME: {"S": name}}
    for key in description["KeySchema"]:
        kind = types[key["AttributeName"]]
        item[key["AttributeName"]] = {kind: "0" if kind == "N" else PROBE_KEY}
    return item


def send_probes(mappings: list[dict], dynamodb, sqs) -> tuple[dict[str, str], dict[str, dict]]:
    """One probe item per source table, one probe message per source queue, each named anew: returns
    source -> probe name, and table -> item written."""
    names, items = {}, {}
    for service, source in sorted({source_name(m) for m in mappings}):
        names[source] = f"{PROBE_KEY}#{uuid.uuid4().hex}"
        if service == "dynamodb":
            items[source] = probe_item(dynamodb, source, names[source])
            dynamodb.put_item(TableName=source, Item=items[source])
        elif service == "sqs":
            sqs.send_message(
                QueueUrl=sqs.get_queue_url(QueueName=source)["QueueUrl"],
                MessageBody='{"probe": true}',
                MessageAttributes={PROBE_ATTRIBUTE: {"DataType": "String", "StringValue": names[source]}},
            )
    return names, items


def passed_since(log_path: Path, offset: int, names: set[str]) -> set[tuple[str, str]]:
    """(function, probe name) of every probe among `names` that a function's output, as the emulator
    logged it after byte `offset` of its log, says it passed."""
    with open(log_path, "rb") as file:
        file.seek(offset)
        text = file.read().decode(errors="replace")
    passed, function = set(), None
    for line in text.splitlines():
        header = OUTPUT_HEADER.match(line)
        if header:
            function = header["function"].split(":")[-1]
        elif LOG_LINE.match(line):
            function = None
        elif function and "delivery probe passed" in line:
            passed.update((function, name) for name in names if name in line)
    return passed


def prove(stack: str, endpoint: str, clients, emulator_log: Path | None, positions_reset: int | None) -> None:
    """Shows that every enabled event source mapping of `stack` delivers: probes in, then the
    emulator's own log read from just before them until each mapping's function logged passing its probe.
    Several stacks on one emulator may prove themselves at once (each reads only its functions' lines).
    Exits naming the mappings that did not deliver within PROOF_TIMEOUT_SECONDS."""
    if emulator_log is None:
        log(f"event source mappings: proof skipped (the emulator at {endpoint} was not started by this "
            "script, so its log is not ours to read)")
        return
    started = time.monotonic()
    count, waiting = probe_through(stack, clients, emulator_log)
    if waiting:
        sys.exit(
            f"event source mappings of {stack} that did not deliver a probe within {PROOF_TIMEOUT_SECONDS} s: "
            + "; ".join(waiting)
            + f" (see {emulator_log})"
        )
    reset = "fresh state" if positions_reset is None else f"stream positions reset: {positions_reset}"
    log(f"event source mappings of {stack}: {count} of {count} delivered a probe "
        f"in {time.monotonic() - started:.1f} s ({reset})")


def drain(stack: str, clients, emulator_log: Path | None) -> None:
    """Before a graceful stop: lets the work in flight finish, so that no change committed before the
    stop is still waiting in a stream (the emulator keeps no stream record across a restart: such a
    change's events would be lost, its order settled only by the sweep, its notification never sent).

    Rounds until quiet: the stack's queues empty (the workers' writes are made), then a probe through
    every stream mapping (stream records are delivered in order, so once a reader passed this probe,
    every change committed before it has been relayed, its messages already queued: the events topic
    delivers to queues within its Publish), then the queues still empty (the relay produced no new
    work). Warns, and
    lets the stop go on, after PROOF_TIMEOUT_SECONDS (a message backing off for longer stays queued;
    queues are kept across a restart)."""
    if emulator_log is None:
        return
    started = time.monotonic()
    deadline = started + PROOF_TIMEOUT_SECONDS
    queues = queue_urls(stack, clients)
    sqs = clients("sqs")
    while True:
        while queued(sqs, queues) and time.monotonic() < deadline:
            time.sleep(0.5)
        # Streams only: a probe message would itself keep the queues busy.
        _, waiting = probe_through(stack, clients, emulator_log, streams_only=True)
        if waiting:
            log(f"warning: before stopping, these mappings of {stack} did not deliver within "
                f"{PROOF_TIMEOUT_SECONDS} s, so events still in flight may be lost: " + "; ".join(waiting))
            return
        if not queued(sqs, queues):
            log(f"event source mappings of {stack} drained before stopping in {time.monotonic() - started:.1f} s")
            return
        if time.monotonic() >= deadline:
            log(f"warning: the queues of {stack} were still busy after {PROOF_TIMEOUT_SECONDS} s; "
                "events of the work still in flight may be lost")
            return


def queue_urls(stack: str, clients) -> list[str]:
    """The queues the stack's functions consume (their event source mappings' queues)."""
    sqs = clients("sqs")
    mappings = stack_mappings(stack, clients("cloudformation"), clients("lambda"))
    names = sorted({source for service, source in map(source_name, mappings) if service == "sqs"})
    return [sqs.get_queue_url(QueueName=name)["QueueUrl"] for name in names]


def queued(sqs, queues: list[str]) -> bool:
    """Whether any of the queues holds a message, visible or being handled."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
    for url in queues:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        if any(int(attributes.get(name, "0")) for name in names):
            return True
    return False


def probe_through(stack: str, clients, emulator_log: Path, streams_only: bool = False) -> tuple[int, list[str]]:
    """Probes every enabled mapping of `stack` (only the stream ones with `streams_only`) and waits for
    each to deliver one (at most PROOF_TIMEOUT_SECONDS): how many were probed, and the labels of those
    that did not deliver."""
    mappings = stack_mappings(stack, clients("cloudformation"), clients("lambda"))
    if streams_only:
        mappings = [m for m in mappings if source_name(m)[0] == "dynamodb"]
    enabled = [m for m in mappings if m.get("State", "Enabled") == "Enabled"]
    dynamodb = clients("dynamodb")
    started = time.monotonic()
    offset = emulator_log.stat().st_size
    names, items = send_probes(enabled, dynamodb, clients("sqs"))
    waiting = {(function_name(m), names[source_name(m)[1]]): m for m in enabled}
    deadline = started + PROOF_TIMEOUT_SECONDS
    while waiting and time.monotonic() < deadline:
        time.sleep(0.5)
        for passed in passed_since(emulator_log, offset, set(names.values())) & waiting.keys():
            waiting.pop(passed)
    for table, item in items.items():
        dynamodb.delete_item(TableName=table, Key={k: v for k, v in item.items() if k not in ("entity", PROBE_NAME)})
    if len(enabled) < len(mappings):
        log(f"{stack}: {len(mappings) - len(enabled)} disabled event source mapping(s) left out")
    return len(enabled), sorted(label(m) for m in waiting.values())


def disable(stack: str, function_suffix: str, table: str, clients) -> str:
    """Disables the mapping of the stack's function `<stack>-<function_suffix>` on `table`'s stream and
    returns its UUID (the chaos sweep scenario: that table's events are never relayed)."""
    lam = clients("lambda")
    for mapping in stack_mappings(stack, clients("cloudformation"), lam):
        if function_name(mapping) == f"{stack}-{function_suffix}" and source_name(mapping) == ("dynamodb", table):
            lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
            log(f"disabled the event source mapping {label(mapping)}")
            return mapping["UUID"]
    sys.exit(f"{stack} has no mapping of {stack}-{function_suffix} on the stream of {table}")
