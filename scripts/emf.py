"""CloudWatch Embedded Metric Format lines, read back from the functions' log groups with the ordinary
`logs` API (the emulator's and AWS's alike): used by `make metrics` and by the observability check."""

from __future__ import annotations

import json


def stack_functions(cloudformation, stack: str) -> list[str]:
    """Physical names of the stack's Lambda functions."""
    paginator = cloudformation.get_paginator("list_stack_resources")
    return [
        r["PhysicalResourceId"]
        for page in paginator.paginate(StackName=stack)
        for r in page["StackResourceSummaries"]
        if r["ResourceType"] == "AWS::Lambda::Function"
    ]


def documents(logs, functions: list[str], since_ms: int, metric: str | None = None) -> list[dict]:
    """Every EMF document the functions logged since `since_ms` (only those naming `metric`, if given)."""
    found = []
    for function in functions:
        try:
            pages = logs.get_paginator("filter_log_events").paginate(
                logGroupName=f"/aws/lambda/{function}", startTime=since_ms,
                filterPattern=f'"{metric}"' if metric else '"CloudWatchMetrics"',
            )
            for page in pages:
                for event in page["events"]:
                    document = parse(event["message"])
                    if document and (metric is None or metric in metric_names(document)):
                        found.append(document)
        except logs.exceptions.ResourceNotFoundException:
            continue  # a function that never ran has no log group yet
    return found


def parse(line: str) -> dict | None:
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict) or not document.get("_aws", {}).get("CloudWatchMetrics"):
        return None
    return document


def metric_names(document: dict) -> set[str]:
    return {m["Name"] for d in document["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def samples(document: dict):
    """(namespace, metric, dimensions, values) for each metric of one EMF document."""
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            dimensions = tuple((name, str(document.get(name, ""))) for name in dimension_set)
            for metric in directive["Metrics"]:
                value = document.get(metric["Name"])
                if isinstance(value, dict):  # a distribution: {"Values": [...], "Counts": [...]}
                    values = [v for v, c in zip(value.get("Values", []), value.get("Counts", [])) for _ in range(int(c))]
                else:
                    values = value if isinstance(value, list) else [value]
                yield directive["Namespace"], metric["Name"], dimensions, [float(v) for v in values if v is not None]
