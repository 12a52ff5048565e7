#!/usr/bin/env python3
"""Applies the SAM transform to template.yaml, as CloudFormation will: catches SAM-specific mistakes
(misspelled event properties, bad policy templates) that `sam validate --lint` lets through. Then checks
what no linter knows: the dashboard's body is valid JSON that shows every metric the code writes, and
every alarm notifies the alarm topic; every function API Gateway invokes, and every worker, has its reserved
concurrency parameter; both API stages write JSON access logs without headers or query strings; every checkov
suppression says why. (checkov itself runs beside this script in `make test-template`.)"""

import json
import os
import re
import sys
from pathlib import Path

from samcli.yamlhelper import yaml_parse
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


class ManagedPolicies:
    """The AWS managed policies SAM attaches by name, without asking IAM."""

    def load(self):
        return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}


ROOT = Path(__file__).resolve().parent.parent
# metrics::counter!("Name" ...) / histogram!(...) / gauge!(...) in the functions and shared crates.
METRIC_CALL = re.compile(r'metrics::(?:counter|histogram|gauge)!\(\s*"([A-Za-z0-9]+)"')


def code_metrics() -> set[str]:
    names = set()
    for source in [*ROOT.glob("functions/*/src/**/*.rs"), *ROOT.glob("shared/*/src/**/*.rs")]:
        names.update(METRIC_CALL.findall(source.read_text()))
    return names


def observability_problems(resources: dict) -> list[str]:
    problems = []
    dashboards = [v for v in resources.values() if v["Type"] == "AWS::CloudWatch::Dashboard"]
    if len(dashboards) != 1:
        return [f"expected one AWS::CloudWatch::Dashboard, found {len(dashboards)}"]
    body = dashboards[0]["Properties"]["DashboardBody"]
    text = body["Fn::Sub"] if isinstance(body, dict) else body
    try:
        widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", text))["widgets"]
    except (ValueError, KeyError) as error:
        return [f"dashboard body is not a widgets JSON document: {error}"]
    for widget in widgets:
        for metric in widget["properties"].get("metrics", []):
            if not isinstance(metric, list):
                problems.append(f"dashboard widget {widget['properties']['title']!r}: each metric must be a list")
    for name in sorted(code_metrics()):
        if f'"{name}"' not in text and f'\\"{name}\\"' not in text:
            problems.append(f"metric {name} is written by the code but not on the dashboard")
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            if {"Ref": "AlarmTopic"} not in resource["Properties"].get("AlarmActions", []):
                problems.append(f"alarm {logical_id} does not notify AlarmTopic")
    return problems


def reserved(parameter: str, condition: str) -> dict:
    return {"Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}


PUBLIC_CONCURRENCY = reserved("PublicFunctionReservedConcurrency", "ReservePublicConcurrency")
WORKER_CONCURRENCY = reserved("WorkerReservedConcurrency", "ReserveWorkerConcurrency")
WORKER_EVENTS = {"SQS", "DynamoDB", "Kinesis", "Schedule", "ScheduleV2", "EventBridgeRule", "SNS"}
# $context variables that would put a token, a header, a query string or a raw path into the access logs.
UNLOGGED = re.compile(r"\$context\.(?:authorizer|path|resourcePath|identity\.(?!sourceIp\b)|requestOverride|responseOverride)|\$(?:request|input|method)\.|querystring|header", re.I)


def edge_problems(resources: dict) -> list[str]:
    """Reserved concurrency of the public and worker functions, the stages' access logs, checkov reasons."""
    problems = []
    socket_targets = {
        name
        for v in resources.values()
        if v["Type"] == "AWS::ApiGatewayV2::Integration"
        for name in re.findall(r"\$\{([A-Za-z0-9]+)\.Arn\}", json.dumps(v["Properties"].get("IntegrationUri", "")))
    }
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        events = {e["Type"] for e in (resource["Properties"].get("Events") or {}).values()}
        actual = resource["Properties"].get("ReservedConcurrentExecutions")
        if "HttpApi" in events or name in socket_targets:
            if actual != PUBLIC_CONCURRENCY:
                problems.append(f"{name} is invoked by API Gateway but does not reserve PublicFunctionReservedConcurrency")
        elif events & WORKER_EVENTS and actual != WORKER_CONCURRENCY:
            problems.append(f"{name} is a worker but does not reserve WorkerReservedConcurrency")
    stages = {n: v["Properties"] for n, v in resources.items() if v["Type"] in ("AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Stage")}
    for name, props in stages.items():
        settings = props.get("AccessLogSettings") or {}
        try:
            fields = json.loads(settings.get("Format", ""))
        except ValueError:
            problems.append(f"{name}: access log format is not one JSON object")
            continue
        values = " ".join(map(str, fields.values()))
        for needed in ("$context.requestId", "$context.routeKey", "$context.status"):
            if needed not in values:
                problems.append(f"{name}: access logs lack {needed}")
        if "Latency" not in values:
            problems.append(f"{name}: access logs lack a latency")
        if UNLOGGED.search(values):
            problems.append(f"{name}: access logs would record {UNLOGGED.search(values).group(0)} (tokens, headers, query strings stay out)")
    for name, resource in resources.items():
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip", []):
            if not str(skip.get("comment", "")).strip():
                problems.append(f"{name}: checkov skip {skip.get('id')} gives no reason")
    return problems


def main() -> int:
    path = ROOT / "template.yaml"
    template = yaml_parse(path.read_text())
    problems = edge_problems(template["Resources"])
    for problem in problems:
        print(f"template.yaml: {problem}", file=sys.stderr)
    if problems:
        return 1
    # As `sam package` would: local code paths become S3 locations.
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://packaged/{resource['Properties']['CodeUri']}.zip"
    try:
        output = transform(template, {}, ManagedPolicies())
    except InvalidDocumentException as error:
        for cause in error.causes:
            print(f"template.yaml: {cause.message}", file=sys.stderr)
        return 1
    resources = output["Resources"]
    problems = observability_problems(resources)
    for problem in problems:
        print(f"template.yaml: {problem}", file=sys.stderr)
    if problems:
        return 1
    functions = [k for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"]
    # The HTTP API's routes are in the OpenAPI body SAM generates; the WebSocket API's are resources.
    routes = [
        v["Properties"]["Body"]["paths"]
        for v in resources.values()
        if v["Type"] == "AWS::ApiGatewayV2::Api" and "Body" in v["Properties"]
    ]
    route_count = sum(len(methods) for paths in routes for methods in paths.values())
    socket_routes = sum(1 for v in resources.values() if v["Type"] == "AWS::ApiGatewayV2::Route")
    print(
        f"SAM transform ok: {len(resources)} resources, {len(functions)} functions, {route_count} HTTP routes, "
        f"{socket_routes} WebSocket routes; "
        f"dashboard shows all {len(code_metrics())} metrics the code writes; every alarm notifies AlarmTopic; "
        f"public functions and workers reserve their concurrency; access logs hold no tokens, headers or query strings"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
