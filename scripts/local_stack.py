#!/usr/bin/env python3
"""Runs the shop's SAM stack on a local AWS emulator (MiniStack, or any LocalStack-style endpoint).

Used by `make dev`, `make url`, `make watch` and `make test`. It deploys the same template.yaml as AWS
does, with host-built bootstraps, then mends what the emulator does not do from the template (HTTP API
routes and CORS), and seeds an admin account and demo products. A stack deployed with
PaymentProvider=stripe charges through a local Stripe beside the emulator (scripts/stripe_local.py).

Runs under the project's SAM venv (.venv/sam), which brings boto3 and SAM's CloudFormation YAML parser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import mappings
import stripe_local

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / ".local"
VENV = ROOT / ".venv"
REGION = "us-east-1"
DEFAULT_ADMIN_EMAIL = "admin@shop.local"
DEFAULT_ADMIN_PASSWORD = "change-me-admin-password"

DEMO_PRODUCTS = [
    {"name": "Enamel mug", "description": "350 ml, speckled blue", "category": "kitchen", "price": 1299, "stock_quantity": 120},
    {"name": "Pour-over kettle", "description": "1 l gooseneck, stainless steel", "category": "kitchen", "price": 4599, "stock_quantity": 35},
    {"name": "Walnut chess set", "description": "Hand-carved, 40 cm board", "category": "games", "price": 8900, "stock_quantity": 12},
    {"name": "Go stones", "description": "Slate and shell, 361 stones", "category": "games", "price": 15900, "stock_quantity": 5},
    {"name": "Linen apron", "description": "Stonewashed, adjustable straps", "category": "kitchen", "price": 3200, "stock_quantity": 60},
]


def log(message: str) -> None:
    print(f"[local-stack] {message}", file=sys.stderr, flush=True)


def aws_env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        AWS_SECRET_ACCESS_KEY=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        SAM_CLI_TELEMETRY="0",
    )
    return env


def client(service: str, endpoint: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


# ---------------------------------------------------------------- emulator


def emulator_answers(endpoint: str) -> bool:
    for path in ("/_ministack/ready", "/_localstack/health"):
        try:
            with urllib.request.urlopen(endpoint + path, timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return False


# The Stripe emulator (scripts/stripe_local.py) sits beside its emulator: 4566 -> 4596, the suite's
# 4577 -> 4607, the chaos suite's 4579 -> 4609.
STRIPE_PORT_OFFSET = 30


class Emulator:
    """A MiniStack process this script started (and so must stop), or None for one already running.

    `log_path` is the emulator's own log when this script started it (the mapping proof reads it), and
    `positions_reset` how many persisted stream positions were reset before the start (None: fresh).
    `stripe` is the Stripe emulator beside it, once a stack deployed with PaymentProvider=stripe asked for
    one (`local_stripe`)."""

    def __init__(self, endpoint: str, port: int, state_dir: Path | None):
        self.endpoint = endpoint
        self.port = port
        self.state_dir = state_dir
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.positions_reset: int | None = None
        self.stripe: stripe_local.LocalStripe | None = None
        self.stripe_lock = threading.Lock()  # stacks deployed side by side (the chaos suite) start one
        if emulator_answers(endpoint):
            log(f"using the emulator already answering at {endpoint}")
            return
        ministack = VENV / "ministack" / "bin" / "ministack"
        if not ministack.exists():
            sys.exit(f"{ministack} is missing: run `make tools` first")
        LOCAL_DIR.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(BIND_HOST="127.0.0.1", GATEWAY_PORT=str(port), AWS_ENDPOINT_URL=endpoint)
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            self.positions_reset = mappings.reset_stream_positions(state_dir)
            env.update(PERSIST_STATE="1", STATE_DIR=str(state_dir), S3_PERSIST="1")
        else:
            env.pop("PERSIST_STATE", None)
        log_path = LOCAL_DIR / f"ministack-{port}.log"
        log(f"starting MiniStack on {endpoint} (log: {log_path.relative_to(ROOT)})")
        self.process = subprocess.Popen(
            [str(ministack)],
            env=env,
            stdout=open(log_path, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.log_path = log_path
        deadline = time.monotonic() + 60
        while not emulator_answers(endpoint):
            if self.process.poll() is not None:
                sys.exit(f"MiniStack exited with {self.process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                self.stop()
                sys.exit(f"MiniStack did not become ready; see {log_path}")
            time.sleep(0.2)

    def local_stripe(self) -> stripe_local.LocalStripe:
        """The Stripe emulator beside this one, started on first use. Its state lives and dies with the
        emulator's: in the state dir when there is one (a Stripe that remembers PaymentIntents the
        tables forgot would be worse than none), else it starts empty (the suites)."""
        with self.stripe_lock:
            if self.stripe is None:
                port = self.port + STRIPE_PORT_OFFSET
                state = self.state_dir / "stripe.pickle" if self.state_dir else LOCAL_DIR / f"stripe-{port}.pickle"
                self.stripe = stripe_local.LocalStripe(port, state, fresh=self.state_dir is None)
            return self.stripe

    def stop(self) -> None:
        """Stops the emulator and the Stripe emulator beside it, when this script started it; one already
        running is left running with its Stripe emulator."""
        if self.process is None:
            return
        if self.stripe is not None:
            self.stripe.stop()
        if self.process.poll() is not None:
            return
        # SIGTERM lets MiniStack write its persisted state; SIGKILL would lose it.
        stop_process_group(self.process, timeout=30)
        log("emulator stopped")


def stop_process_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to a server started with start_new_session=True and its children, SIGKILL after `timeout`."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---------------------------------------------------------------- template


def load_template() -> dict:
    from samcli.yamlhelper import yaml_parse

    return yaml_parse((ROOT / "template.yaml").read_text())


# What every local stack is deployed with, before the caller's overrides.
LOCAL_PARAMETERS = [
    "Architecture=x86_64", "LogLevel=info",
    # Local stacks never send real email or SMS, and retry fast so the suite sees dead-lettering.
    "NotificationsMode=mock", "NotificationsMaxReceiveCount=3", "NotificationsRetryBaseSeconds=1",
    "PaymentMaxAttempts=3", "PaymentsMaxReceiveCount=5",
    # MiniStack's SQS poller fails on an event source mapping's ScalingConfig.
    "WorkerMaxConcurrency=0",
    # The emulator (one Python process) answers a burst of cold starts on two busy cores in seconds,
    # not milliseconds: a 5 s budget per AWS call failed 50 concurrent placements with 503s.
    "AwsCallTimeoutSeconds=9",
]


def effective_parameters(template: dict, overrides: list[str]) -> dict[str, str]:
    """The parameter values of a local deploy with `overrides`: the template's defaults, then
    LOCAL_PARAMETERS, then the overrides (the last of a name wins, as in sam deploy)."""
    values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    for pair in [*LOCAL_PARAMETERS, *overrides]:
        name, _, value = pair.partition("=")
        values[name] = value
    return values


def condition_holds(template: dict, name: str, parameters: dict[str, str]) -> bool:
    """One of the template's Conditions under `parameters` (Fn::Equals, Fn::Not, Fn::And, Fn::Or over
    parameters and other conditions): which conditional functions a stack gets, so that none is built
    or routed for a stack without it (the Stripe webhook with PaymentProvider=mock)."""

    def value(node):
        if not isinstance(node, dict):
            return node
        (function, argument), = node.items()
        if function == "Ref":
            return parameters[argument]
        if function == "Condition":
            return condition_holds(template, argument, parameters)
        if function == "Fn::Equals":
            return str(value(argument[0])) == str(value(argument[1]))
        if function == "Fn::Not":
            return not value(argument[0])
        if function in ("Fn::And", "Fn::Or"):
            combine = all if function == "Fn::And" else any
            return combine(value(item) for item in argument)
        raise ValueError(f"condition {name}: {function} is not evaluated locally")

    return bool(value(template["Conditions"][name]))


def template_functions(template: dict, parameters: dict[str, str] | None = None, deployed: bool = True) -> dict[str, dict]:
    """Logical id -> {crate, routes: [(METHOD, path)]} for every function a stack deployed with
    `parameters` has (default: the template's defaults as a local stack gets them): a function whose
    Condition does not hold is left out. `deployed=False`: those left out instead."""
    if parameters is None:
        parameters = effective_parameters(template, [])
    functions = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        holds = "Condition" not in resource or condition_holds(template, resource["Condition"], parameters)
        if holds != deployed:
            continue
        props = resource["Properties"]
        crate = Path(props["CodeUri"]).name
        routes = [
            (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
            for event in (props.get("Events") or {}).values()
            if event.get("Type") == "HttpApi"
        ]
        functions[logical_id] = {"crate": crate, "routes": routes}
    return functions


def build_bootstraps(crates: list[str]) -> Path:
    """Builds the stack's functions for the host (the emulator runs them as local processes) and lays each
    out as <dir>/<crate>/bootstrap, the shape `sam build` produces."""
    log(f"building {len(crates)} functions for the host")
    command = ["cargo", "build", "--locked", *[arg for crate in crates for arg in ("-p", crate)]]
    subprocess.run(command, cwd=ROOT, check=True)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    out = ROOT / "target" / "lambda-local"
    for crate in crates:
        binary = target_dir / "debug" / crate
        target = out / crate / "bootstrap"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or not os.path.samefile(binary, target):
            # A hard link, not a copy: 30 debug binaries are about 1.5 GB, and disk is what runs out
            # first on a small CI machine. cargo replaces a rebuilt binary with a new file, so the link
            # keeps the bytes the stack was deployed with until the next build links again.
            target.unlink(missing_ok=True)
            try:
                os.link(binary, target)
            except OSError:  # another filesystem (CARGO_TARGET_DIR elsewhere)
                shutil.copy2(binary, target)
        target.chmod(0o755)
    return out


def built_template(bootstraps: Path, stack: str, crates: list[str]) -> Path:
    """template.yaml with each CodeUri pointing at its built bootstrap, as `sam build` would write it. A
    function the stack does not get (its Condition is false: nothing was built for it) points at an
    empty placeholder, which sam deploy uploads and CloudFormation never uses."""
    text = (ROOT / "template.yaml").read_text()
    placeholder = bootstraps / "not-deployed"
    placeholder.mkdir(parents=True, exist_ok=True)
    (placeholder / "README").write_text("A function this local stack does not deploy (its Condition is false).\n")
    text, count = re.subn(
        r"^(\s*CodeUri:\s*)functions/([A-Za-z0-9_-]+)\s*$",
        lambda m: f"{m.group(1)}{bootstraps / m.group(2) if m.group(2) in crates else placeholder}",
        text,
        flags=re.MULTILINE,
    )
    if count == 0:
        sys.exit("template.yaml has no CodeUri: functions/<name> entries")
    out_dir = ROOT / ".aws-sam" / f"local-{stack}"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "template.yaml"
    out.write_text(text)
    return out


def sam_deploy(template_path: Path, stack: str, endpoint: str, overrides: list[str]) -> None:
    sam = VENV / "sam" / "bin" / "sam"
    log(f"deploying stack {stack} with sam deploy")
    command = [
        str(sam), "deploy",
        "--template-file", str(template_path),
        "--stack-name", stack,
        "--region", REGION,
        "--resolve-s3",
        "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND",
        "--no-confirm-changeset",
        "--no-fail-on-empty-changeset",
        "--parameter-overrides", *LOCAL_PARAMETERS, *overrides,
    ]
    # Run beside the built template, away from samconfig.toml, whose environments target AWS.
    result = subprocess.run(command, cwd=template_path.parent, env=aws_env(endpoint), capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        sys.exit("sam deploy failed")
    if "No changes to deploy" in result.stdout + result.stderr:
        log("stack is up to date")


def stack_outputs(stack: str, endpoint: str) -> dict[str, str]:
    cfn = client("cloudformation", endpoint)
    described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def physical_ids(stack: str, endpoint: str) -> dict[str, str]:
    cfn = client("cloudformation", endpoint)
    resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
    return {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}


def ensure_routes(template: dict, parameters: dict[str, str], stack: str, endpoint: str, api_id: str) -> None:
    """The emulator ignores the OpenAPI body SAM generates, so create each route of the stack's functions
    (and the CORS configuration) through the apigatewayv2 API. Idempotent: existing routes are left alone,
    but those of a function the stack no longer has (PaymentProvider back to mock) are deleted."""
    apigw = client("apigatewayv2", endpoint)
    lam = client("lambda", endpoint)
    ids = physical_ids(stack, endpoint)
    gone = {f"{method} {path}" for f in template_functions(template, parameters, deployed=False).values() for method, path in f["routes"]}
    for route in apigw.get_routes(ApiId=api_id)["Items"]:
        if route["RouteKey"] in gone:
            apigw.delete_route(ApiId=api_id, RouteId=route["RouteId"])
            log(f"HTTP API route {route['RouteKey']} deleted: its function is not in this stack")
    existing_routes = {r["RouteKey"] for r in apigw.get_routes(ApiId=api_id)["Items"]}
    integrations = {i["IntegrationUri"]: i["IntegrationId"] for i in apigw.get_integrations(ApiId=api_id)["Items"]}
    created = 0
    for logical_id, function in template_functions(template, parameters).items():
        if not function["routes"]:
            continue
        arn = lam.get_function(FunctionName=ids[logical_id])["Configuration"]["FunctionArn"]
        for method, path in function["routes"]:
            key = f"{method} {path}"
            if key in existing_routes:
                continue
            if arn not in integrations:
                integrations[arn] = apigw.create_integration(
                    ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn, PayloadFormatVersion="2.0"
                )["IntegrationId"]
            apigw.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integrations[arn]}")
            created += 1
    cors = template["Resources"]["HttpApi"]["Properties"].get("CorsConfiguration")
    if cors:
        apigw.update_api(
            ApiId=api_id,
            CorsConfiguration={
                "AllowOrigins": ["*"],
                "AllowHeaders": cors["AllowHeaders"],
                "AllowMethods": cors["AllowMethods"],
                "ExposeHeaders": cors["ExposeHeaders"],
                "MaxAge": cors["MaxAge"],
            },
        )
    log(f"HTTP API routes: {created} created, {len(existing_routes)} already present")


def ensure_ttl(template: dict, stack: str, endpoint: str) -> None:
    """MiniStack ignores TimeToLiveSpecification in templates: switch TTL on through the API."""
    dynamodb = client("dynamodb", endpoint)
    ids = physical_ids(stack, endpoint)
    for logical_id, resource in template["Resources"].items():
        spec = resource.get("Properties", {}).get("TimeToLiveSpecification")
        if resource.get("Type") != "AWS::DynamoDB::Table" or not spec:
            continue
        table = ids[logical_id]
        current = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=table,
                TimeToLiveSpecification={"AttributeName": spec["AttributeName"], "Enabled": True},
            )


# ---------------------------------------------------------------- seeding


def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    status, _, answer = http_exchange(method, url, body, {"authorization": f"Bearer {token}"} if token else None)
    return status, answer


def http_exchange(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    """One JSON call: (status, response headers with lower-case names, body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.loads(error.read() or b"{}")


def api_base(endpoint: str, api_id: str) -> str:
    return f"{endpoint}/_aws/execute-api/{api_id}"


def websocket_url(endpoint: str, api_id: str, stage: str) -> str:
    """The emulator serves a WebSocket API's stage under the same path as HTTP APIs (AWS: the stack
    output WebSocketUrl)."""
    return f"{endpoint.replace('http://', 'ws://', 1).replace('https://', 'wss://', 1)}/_aws/execute-api/{api_id}/{stage}"


def promote(stack: str, endpoint: str, email: str) -> None:
    name = stack_outputs(stack, endpoint)["PromoteFunctionName"]
    result = client("lambda", endpoint).invoke(FunctionName=name, Payload=json.dumps({"email": email}).encode())
    payload = result["Payload"].read()
    if result.get("FunctionError"):
        sys.exit(f"promoting {email} failed: {payload.decode(errors='replace')}")


def seed(base: str, stack: str, endpoint: str, email: str, password: str, demo_products: bool) -> None:
    status, body = http("POST", f"{base}/api/users", {"email": email, "password": password, "name": "Shop admin"})
    if status not in (201, 409):
        sys.exit(f"could not register the admin ({status}): {body}")
    promote(stack, endpoint, email)
    status, body = http("POST", f"{base}/api/auth/login", {"email": email, "password": password})
    if status != 200:
        sys.exit(f"admin login failed ({status}): {body}. If the admin existed with another password, use it.")
    token = body["access_token"]
    if not demo_products:
        return
    status, page = http("GET", f"{base}/api/products?limit=1")
    if status == 200 and page["items"]:
        return
    for product in DEMO_PRODUCTS:
        status, body = http("POST", f"{base}/api/products", product, token)
        if status != 201:
            sys.exit(f"could not create a demo product ({status}): {body}")
    log(f"created {len(DEMO_PRODUCTS)} demo products")


def jwt_secret(stack: str, endpoint: str) -> str:
    secret_id = stack_outputs(stack, endpoint)["JwtSecretId"]
    return client("secretsmanager", endpoint).get_secret_value(SecretId=secret_id)["SecretString"]


# ---------------------------------------------------------------- Stripe (PaymentProvider=stripe)

STRIPE_WEBHOOK_PATH = "/api/payments/stripe/webhook"


def stripe_keys(secret_name: str, endpoint: str) -> dict[str, str]:
    """The {"secret_key", "webhook_secret"} a stripe stack reads from its StripeSecretName secret."""
    return json.loads(client("secretsmanager", endpoint).get_secret_value(SecretId=secret_name)["SecretString"])


def put_secret(name: str, value: str, endpoint: str) -> None:
    """Creates the secret, or gives it `value` when it holds another (a new version only then)."""
    secretsmanager = client("secretsmanager", endpoint)
    try:
        current = secretsmanager.get_secret_value(SecretId=name)["SecretString"]
    except secretsmanager.exceptions.ResourceNotFoundException:
        secretsmanager.create_secret(Name=name, SecretString=value, Description="Stripe keys of a local stack")
        return
    if current != value:
        secretsmanager.put_secret_value(SecretId=name, SecretString=value)


def stripe_overrides(stack: str, emulator: Emulator, overrides: list[str], parameters: dict[str, str]) -> list[str]:
    """What a stack deployed with PaymentProvider=stripe needs and its overrides leave out, before the
    deploy: StripeApiUrl, the Stripe emulator beside the emulator (started now if need be), and
    StripeSecretName, a secret `<stack>-stripe` holding the stack's local keys. A user's own
    StripeApiUrl or StripeSecretName is kept. Nothing at all for any other provider."""
    if parameters["PaymentProvider"] != "stripe":
        return []
    given = {pair.partition("=")[0] for pair in overrides}
    added = []
    if "StripeApiUrl" not in given:
        added.append(f"StripeApiUrl={emulator.local_stripe().url}")
    if not parameters["StripeSecretName"]:
        name = f"{stack}-stripe"
        put_secret(name, json.dumps(stripe_local.stack_keys(stack)), emulator.endpoint)
        added.append(f"StripeSecretName={name}")
    return added


def connect_stripe(stack: str, emulator: Emulator, parameters: dict[str, str], api_url: str) -> dict | None:
    """After every deploy (or skipped one) of a stripe stack: its webhook route registered with the
    Stripe emulator it charges through, under the stack's name, signed with the webhook secret of its
    StripeSecretName (localstripe keeps webhooks in memory only, so a restart loses them). A StripeApiUrl
    that is not the emulator's own is left to the user. Returns the stack's Stripe (None: mock)."""
    if parameters["PaymentProvider"] != "stripe":
        return None
    stripe = {"url": parameters["StripeApiUrl"], "secret_name": parameters["StripeSecretName"]}
    webhook = f"{api_url}{STRIPE_WEBHOOK_PATH}"
    if emulator.stripe is None or emulator.stripe.url != stripe["url"]:
        log(f"Stripe at {stripe['url']} is not the local emulator: register {webhook} with it yourself")
        return stripe
    webhook_secret = stripe_keys(stripe["secret_name"], emulator.endpoint)["webhook_secret"]
    stripe_local.register_webhook(stripe["url"], stack, webhook, webhook_secret)
    log(f"Stripe webhook {stack}: the Stripe emulator at {stripe['url']} sends its events to {webhook}")
    return stripe


# ---------------------------------------------------------------- commands


def info_path(stack: str) -> Path:
    return LOCAL_DIR / f"{stack}.json"


def stack_is_deployed(stack: str, endpoint: str) -> bool:
    try:
        status = client("cloudformation", endpoint).describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    except Exception:  # noqa: BLE001 - any failure means "deploy it"
        return False
    return status in ("CREATE_COMPLETE", "UPDATE_COMPLETE")


def fingerprint(template_path: Path, bootstraps: Path) -> str:
    """Changes whenever the built template or a bootstrap does (bootstraps are only rewritten when their
    bytes change, so size and mtime suffice)."""
    import hashlib

    digest = hashlib.sha256(template_path.read_bytes())
    for bootstrap in sorted(bootstraps.glob("*/bootstrap")):
        stat = bootstrap.stat()
        digest.update(f"{bootstrap.parent.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def deploy(args, emulator: Emulator, overrides: list[str] | None = None) -> dict:
    overrides = overrides or []
    template = load_template()
    overrides = [*overrides, *stripe_overrides(args.stack, emulator, overrides, effective_parameters(template, overrides))]
    parameters = effective_parameters(template, overrides)
    crates = sorted({function["crate"] for function in template_functions(template, parameters).values()})
    bootstraps = build_bootstraps(crates)
    template_path = built_template(bootstraps, args.stack, crates)
    deployed_marker = LOCAL_DIR / f"{args.stack}.deployed"
    current = fingerprint(template_path, bootstraps) + " ".join(overrides)
    unchanged = deployed_marker.exists() and deployed_marker.read_text() == f"{emulator.endpoint} {current}"
    if unchanged and stack_is_deployed(args.stack, emulator.endpoint):
        log("nothing changed since the last deploy; skipping sam deploy")
    else:
        sam_deploy(template_path, args.stack, emulator.endpoint, overrides)
        LOCAL_DIR.mkdir(exist_ok=True)
        deployed_marker.write_text(f"{emulator.endpoint} {current}")
    outputs = stack_outputs(args.stack, emulator.endpoint)
    api_id = outputs["HttpApiId"]
    ensure_routes(template, parameters, args.stack, emulator.endpoint, api_id)
    ensure_ttl(template, args.stack, emulator.endpoint)
    base = api_base(emulator.endpoint, api_id)
    stripe = connect_stripe(args.stack, emulator, parameters, base)
    ws_url = websocket_url(emulator.endpoint, outputs["WebSocketApiId"], outputs["WebSocketStageName"])
    seed(base, args.stack, emulator.endpoint, args.admin_email, args.admin_password, demo_products=not args.no_demo)
    prove_mappings(args.stack, emulator)
    info = {
        "stack": args.stack,
        "endpoint": emulator.endpoint,
        "api_url": base,
        "ws_url": ws_url,
        "admin_email": args.admin_email,
        "outputs": outputs,
        "stripe": stripe,
    }
    LOCAL_DIR.mkdir(exist_ok=True)
    info_path(args.stack).write_text(json.dumps(info, indent=2))
    # For `make watch`: the same tables and secret, reached from functions run by cargo lambda.
    (LOCAL_DIR / f"{args.stack}.watch.env").write_text(
        "\n".join(
            [
                f"AWS_ENDPOINT_URL={emulator.endpoint}",
                "AWS_ACCESS_KEY_ID=test",
                "AWS_SECRET_ACCESS_KEY=test",
                f"AWS_REGION={REGION}",
                f"USERS_TABLE={outputs['UsersTableName']}",
                f"PRODUCTS_TABLE={outputs['ProductsTableName']}",
                f"ORDERS_TABLE={outputs['OrdersTableName']}",
                f"IDEMPOTENCY_TABLE={outputs['IdempotencyTableName']}",
                f"NOTIFICATIONS_TABLE={outputs['NotificationsTableName']}",
                f"INVENTORY_ADJUSTMENTS_TABLE={outputs['InventoryAdjustmentsTableName']}",
                f"JWT_SECRET_ID={outputs['JwtSecretId']}",
                f"GUARDS_TABLE={outputs['GuardsTableName']}",
                "RATE_LIMIT_REQUESTS=100",
                "RATE_LIMIT_WINDOW_SECONDS=60",
                "LOGIN_EMAIL_LOCK_AFTER_FAILURES=10",
                "LOGIN_IP_LOCK_AFTER_FAILURES=100",
                "LOGIN_LOCK_SECONDS=900",
                "RUST_LOG=info",
                *([f"STRIPE_SECRET_NAME={stripe['secret_name']}"] if stripe else []),
            ]
        )
        + "\n"
    )
    return info


def prove_mappings(stack: str, emulator: Emulator) -> None:
    """After every deploy (or skipped one): each event source mapping of the stack delivers a probe
    (scripts/mappings.py; the emulator's stream positions do not survive its restarts as they should)."""
    mappings.prove(
        stack, emulator.endpoint, lambda service: client(service, emulator.endpoint),
        emulator.log_path, emulator.positions_reset,
    )


def drain_mappings(stack: str, emulator: Emulator) -> None:
    """Before a graceful stop of an emulator of ours: every change committed so far leaves the streams
    first (scripts/mappings.py)."""
    if emulator.process is None or emulator.process.poll() is not None:
        return
    mappings.drain(stack, lambda service: client(service, emulator.endpoint), emulator.log_path)


def parameter_overrides(raw: str) -> list[str]:
    """`Name=Value Name2=Value2` (README "The two commands"), checked against the
    template's parameters so that a typo stops here instead of being ignored."""
    known = set(load_template().get("Parameters", {}))
    overrides = []
    for pair in raw.split():
        name, sep, _ = pair.partition("=")
        if not sep or not name:
            sys.exit(f"PARAMS: {pair!r} is not Name=Value")
        if name not in known:
            sys.exit(f"PARAMS: {name} is not a parameter of template.yaml (known: {', '.join(sorted(known))})")
        overrides.append(pair)
    return overrides


def ready_line(started: float, since: int | None) -> str:
    """How long the stack took to be ready: from `since` (the epoch second `make dev` started, so that a
    fresh clone's installs and Rust build count) when given, else from this script's start."""
    if since:
        return f"ready in {time.time() - since:.0f} s (since make dev started)"
    return f"ready in {time.monotonic() - started:.1f} s"


def cmd_up(args) -> int:
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or f"http://127.0.0.1:{args.port}"
    state_dir = None if args.ephemeral else LOCAL_DIR / f"state-{args.port}"
    overrides = parameter_overrides(args.params)
    if overrides:
        log(f"parameter overrides: {' '.join(overrides)}")
    started = time.monotonic()
    traces = None
    if args.traces_port:
        if not args.serve:
            sys.exit("--traces-port needs --serve (Phoenix stops with the served stack)")
        traces = subprocess.Popen(
            [str(TRACES_PYTHON), str(ROOT / "scripts" / "traces.py"), "serve", "--port", str(args.traces_port),
             "--dir", str(LOCAL_DIR / "traces")],
            cwd=ROOT,
        )
        overrides = [*overrides, f"OtlpEndpoint=http://127.0.0.1:{args.traces_port}"]
    emulator = Emulator(endpoint, args.port, state_dir)
    try:
        info = deploy(args, emulator, overrides)
        log(ready_line(started, args.since))
        stripe = info["stripe"]
        # A stripe stack's Stripe, beside the API (`make dev PARAMS="PaymentProvider=stripe"`).
        stripe_line = f"\n    Stripe   : {stripe['url']}  (keys in secret {stripe['secret_name']})" if stripe else ""
        print(
            f"""
  Shop API (stack {info['stack']}) is up.
    Base URL : {info['api_url']}{stripe_line}
    WebSocket: {info['ws_url']}?token=<access token>  (order updates; `make -s ws-url`)
    Admin    : {args.admin_email} / {args.admin_password}
  Try:
    curl {info['api_url']}/health
    curl '{info['api_url']}/api/products?limit=2'
    TOKEN=$(curl -s -X POST {info['api_url']}/api/auth/login -H 'content-type: application/json' \\
      -d '{{"email":"{args.admin_email}","password":"{args.admin_password}"}}' | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')
    curl -X POST {info['api_url']}/api/products -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
      -d '{{"name":"Tea towel","category":"kitchen","price":899,"stock_quantity":50}}'
""",
            flush=True,
        )
        if traces:
            print(f"  Traces (Phoenix): http://127.0.0.1:{args.traces_port}  (each order's waterfall; `make metrics` for EMF)\n", flush=True)
        if args.serve:
            if emulator.process is None:
                log("the emulator is not ours to stop; exiting")
                return 0
            print("  Serving until Ctrl-C.", flush=True)
            stop = {"now": False}

            def on_signal(signum, frame):
                stop["now"] = True

            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
            while not stop["now"] and emulator.process.poll() is None:
                time.sleep(0.5)
            # A second Ctrl-C skips the wait.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            drain_mappings(args.stack, emulator)
        return 0
    finally:
        if args.serve or args.ephemeral:
            emulator.stop()
        if traces and traces.poll() is None:
            traces.terminate()
            traces.wait(timeout=30)


def cmd_endpoint(args) -> int:
    path = info_path(args.stack)
    if not path.exists():
        print(f"no local stack {args.stack} has been deployed: run `make dev`", file=sys.stderr)
        return 1
    print(json.loads(path.read_text())["endpoint"])
    return 0


def cmd_url(args) -> int:
    path = info_path(args.stack)
    if not path.exists():
        print(f"no local stack {args.stack} has been deployed: run `make dev`", file=sys.stderr)
        return 1
    info = json.loads(path.read_text())
    if not emulator_answers(info["endpoint"]):
        print(f"(the emulator at {info['endpoint']} is not running: start it with `make dev`)", file=sys.stderr)
    print(info["ws_url"] if args.websocket else info["api_url"])
    return 0


def cmd_metrics(args) -> int:
    """The EMF metrics of the last --minutes, from the stack's function log groups: per namespace, metric
    and dimensions, the number of samples and their sum, min and max."""
    import emf

    if args.aws:
        import boto3

        cloudformation, logs = boto3.client("cloudformation"), boto3.client("logs")
    else:
        path = info_path(args.stack)
        if not path.exists():
            print(f"no local stack {args.stack} has been deployed: run `make dev`", file=sys.stderr)
            return 1
        endpoint = json.loads(path.read_text())["endpoint"]
        if not emulator_answers(endpoint):
            print(f"the emulator at {endpoint} is not running: start it with `make dev`", file=sys.stderr)
            return 1
        cloudformation, logs = client("cloudformation", endpoint), client("logs", endpoint)
    since_ms = int((time.time() - args.minutes * 60) * 1000)
    table: dict[tuple, list[float]] = {}
    for document in emf.documents(logs, emf.stack_functions(cloudformation, args.stack), since_ms):
        for namespace, metric, dimensions, values in emf.samples(document):
            table.setdefault((namespace, metric, dimensions), []).extend(values)
    print(f"EMF metrics of stack {args.stack}, last {args.minutes} min")
    if not table:
        print("  (none: nothing ran in that window)")
        return 0
    print(f"  {'namespace':<10} {'metric':<24} {'dimensions':<44} {'samples':>7} {'sum':>12} {'min':>10} {'max':>10}")
    for (namespace, metric, dimensions), values in sorted(table.items()):
        where = ",".join(f"{k}={v}" for k, v in dimensions)
        print(
            f"  {namespace:<10} {metric:<24} {where:<44} {len(values):>7} {sum(values):>12g} "
            f"{min(values, default=0):>10g} {max(values, default=0):>10g}"
        )
    return 0


# The suite's stack: every anonymous request comes from 127.0.0.1 there, so per-client limits are
# generous; emails lock after 4 failures for 4 s so lockout and recovery are quick to see.
SUITE_OVERRIDES = [
    "RateLimitRequests=1000000", "AuthRateLimitRequests=1000000",
    "LoginEmailLockAfterFailures=4", "LoginIpLockAfterFailures=1000000", "LoginLockSeconds=4",
    "NotificationsPerUserPerHour=10000",
]
# A second stack in the same emulator with tight limits, for the tests of the limits themselves
# (tests/limits.rs); short windows so that recovery takes seconds.
LIMITS_STACK = "shop-e2e-limits"
LIMITS_OVERRIDES = [
    "RateLimitRequests=5", "RateLimitWindowSeconds=2",
    "AuthRateLimitRequests=8", "AuthRateLimitWindowSeconds=3",
    "LoginEmailLockAfterFailures=1000", "LoginIpLockAfterFailures=4", "LoginLockSeconds=3",
    "NotificationsPerUserPerHour=2",
]
# The orders sweep settles an order still pending after a minute, every minute.
FAST_SWEEP = ["StuckOrderMinutes=1", "SweepIntervalMinutes=1"]
# A third stack in the same emulator that charges through Stripe (the Stripe emulator beside the
# emulator), for tests/ that pay with it: the suite's limits, and a 3-D Secure left undone expires
# (payment_expired) within the sweep's next minutes.
STRIPE_STACK = "shop-e2e-stripe"
STRIPE_OVERRIDES = [*SUITE_OVERRIDES, "PaymentProvider=stripe", *FAST_SWEEP, "PaymentActionMinutes=1"]


# The stack outputs the e2e suite reads, for the tests that set up state or count round trips through the
# repositories directly: the name it reads each under (after its prefix) -> the output.
SUITE_OUTPUTS = {
    "USERS_TABLE": "UsersTableName", "PRODUCTS_TABLE": "ProductsTableName", "ORDERS_TABLE": "OrdersTableName",
    "IDEMPOTENCY_TABLE": "IdempotencyTableName", "INVENTORY_ADJUSTMENTS_TABLE": "InventoryAdjustmentsTableName",
    "GUARDS_TABLE": "GuardsTableName", "CONNECTIONS_TABLE": "ConnectionsTableName",
    "NOTIFICATIONS_TABLE": "NotificationsTableName", "NOTIFICATIONS_QUEUE_URL": "NotificationsQueueUrl",
    "NOTIFICATIONS_DLQ_URL": "NotificationsDeadLetterQueueUrl", "PAYMENTS_QUEUE_URL": "PaymentsQueueUrl",
    "FAILED_RECORDS_QUEUE_URL": "PublisherFailedRecordsQueueUrl", "PAYMENTS_LEDGER_TABLE": "MockPaymentsLedgerTableName",
}


def stack_env(info: dict, endpoint: str, prefix: str = "SHOP_") -> dict[str, str]:
    """The deployed stack `info` as the e2e suite reaches it, each name under `prefix`: its URLs, its
    signing key and SUITE_OUTPUTS."""
    values = dict(
        API_URL=info["api_url"],
        WS_URL=info["ws_url"],
        JWT_SECRET=jwt_secret(info["stack"], endpoint),
        **{name: info["outputs"][output] for name, output in SUITE_OUTPUTS.items()},
    )
    return {f"{prefix}{name}": value for name, value in values.items()}


def suite_env(info: dict, args, endpoint: str) -> dict[str, str]:
    """What the e2e suite needs to reach the deployed stack `info` (README "The end-to-end suite")."""
    return dict(
        stack_env(info, endpoint),
        SHOP_ADMIN_EMAIL=args.admin_email,
        SHOP_ADMIN_PASSWORD=args.admin_password,
        SHOP_AWS_ENDPOINT_URL=endpoint,
        # How the outbox test redrives failed records, as an operator would.
        SHOP_REDRIVE_COMMAND=f"{VENV / 'sam' / 'bin' / 'python'} {ROOT / 'scripts' / 'redrive_outbox.py'} "
        f"--stack {args.stack} --endpoint {endpoint}",
    )


def stripe_suite_env(info: dict, endpoint: str) -> dict[str, str]:
    """The stripe stack `info` under SHOP_STRIPE_ (stack_env), the Stripe emulator it charges through
    (SHOP_STRIPE_URL) and the keys of its secret: the tests drive 3-D Secure and sign events with them."""
    keys = stripe_keys(info["stripe"]["secret_name"], endpoint)
    return dict(
        stack_env(info, endpoint, "SHOP_STRIPE_"),
        SHOP_STRIPE_URL=info["stripe"]["url"],
        SHOP_STRIPE_SECRET_KEY=keys["secret_key"],
        SHOP_STRIPE_WEBHOOK_SECRET=keys["webhook_secret"],
        SHOP_STRIPE_SETTINGS=" ".join(STRIPE_OVERRIDES),
    )


# The suite's stack exports its spans to a recording receiver in front of Phoenix (scripts/traces.py), on
# these ports, so that the observability check can follow one order through the functions.
TRACES_PYTHON = VENV / "traces" / "bin" / "python"
# The suite's trace recorder and its Phoenix sit beside its emulator (4577 -> 4590, 4591), so a second
# suite on another --port runs beside the first.
RECORDER_PORT_OFFSET = 13


class TraceRecorder:
    """`traces.py record` in the background: Phoenix behind a receiver that keeps every span."""

    def __init__(self, port: int, phoenix_port: int, workdir: Path):
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        self.workdir = workdir
        self.ready_file = workdir / "ready"
        self.url = f"http://127.0.0.1:{port}"
        self.phoenix_url = f"http://127.0.0.1:{phoenix_port}"
        self.process = subprocess.Popen(
            [str(TRACES_PYTHON), str(ROOT / "scripts" / "traces.py"), "record", "--port", str(port),
             "--phoenix-port", str(phoenix_port), "--dir", str(workdir), "--ready-file", str(self.ready_file)],
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the trace recorder (Phoenix) did not start; see {self.workdir / 'phoenix.log'}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def conformance_check(api_url: str, args) -> int:
    """schemathesis against the stack's own /openapi.json (scripts/schemathesis_run.py,
    docs/api-conformance.md): every check, a two-minute budget, as a throwaway customer (and the admin-only
    operations as the admin, logged in once); any server error or conformance failure fails it."""
    log(f"running the API conformance check (schemathesis) against {api_url}")
    return subprocess.call(
        [sys.executable, str(ROOT / "scripts" / "schemathesis_run.py"), "--api", api_url,
         "--admin-email", args.admin_email, "--admin-password", args.admin_password,
         "--report-dir", str(LOCAL_DIR / "schemathesis-e2e"),
         # The suite's stack pays with the mock: Stripe's webhook route is not deployed there (404), and
         # tests/stripe.rs covers it on the Stripe stack.
         "--", "--exclude-operation-id", "stripeWebhook"],
        cwd=ROOT,
    )


def cmd_e2e(args) -> int:
    """Starts a private emulator and trace recorder, deploys a fresh stack (and a tightly limited second
    one, and a third charging through the Stripe emulator beside the emulator), runs the end-to-end suite
    and the observability check against them, stops them."""
    endpoint = f"http://127.0.0.1:{args.port}"
    if emulator_answers(endpoint):
        sys.exit(f"port {args.port} is taken by another emulator; the suite needs its own")
    recorder = TraceRecorder(
        args.port + RECORDER_PORT_OFFSET, args.port + RECORDER_PORT_OFFSET + 1, LOCAL_DIR / f"traces-e2e-{args.port}"
    )
    emulator = Emulator(endpoint, args.port, state_dir=None)
    try:
        info = deploy(args, emulator, [*SUITE_OVERRIDES, f"OtlpEndpoint={recorder.url}"])
        env = dict(os.environ)
        if not args.without_limits_stack:
            limits = deploy(argparse.Namespace(**{**vars(args), "stack": LIMITS_STACK}), emulator, LIMITS_OVERRIDES)
            env.update(
                SHOP_LIMITS_API_URL=limits["api_url"],
                SHOP_LIMITS_JWT_SECRET=jwt_secret(LIMITS_STACK, endpoint),
                SHOP_LIMITS_SETTINGS=" ".join(LIMITS_OVERRIDES),
            )
        if not args.without_stripe_stack:
            stripe = deploy(argparse.Namespace(**{**vars(args), "stack": STRIPE_STACK}), emulator, STRIPE_OVERRIDES)
            env.update(stripe_suite_env(stripe, endpoint))
        env.update(suite_env(info, args, endpoint))
        recorder.wait_ready()
        log(f"running the end-to-end suite, the observability check and the docs page check against {info['api_url']}")
        # The chaos scenarios need stacks of their own (`make chaos`, `make test-chaos`).
        suite = subprocess.Popen(
            ["cargo", "test", "--locked", "--no-fail-fast", "-p", "e2e", "--tests", "--", "--skip", "chaos_", *args.test_args],
            cwd=ROOT, env=env,
        )
        check = subprocess.Popen(
            [str(TRACES_PYTHON), str(ROOT / "scripts" / "traces.py"), "check", "--api", info["api_url"],
             "--recorder", recorder.url, "--phoenix", recorder.phoenix_url, "--stack", args.stack,
             "--endpoint", endpoint, "--admin-email", args.admin_email, "--admin-password", args.admin_password,
             "--screenshot", str(LOCAL_DIR / "traces-e2e" / "order-waterfall.png")],
            cwd=ROOT,
        )
        docs = subprocess.Popen(
            [str(TRACES_PYTHON), str(ROOT / "scripts" / "page_checks.py"), "docs", "--api", info["api_url"],
             "--screenshot", str(LOCAL_DIR / "pages-e2e" / "docs.png")],
            cwd=ROOT,
        )
        failed = [name for name, process in (("observability", check), ("docs page", docs)) if process.wait() != 0]
        suite_status = suite.wait()
        # After the suite, on its stack (its limits are the suite's): schemathesis on its own.
        if conformance_check(info["api_url"], args) != 0:
            failed.append("API conformance (schemathesis)")
        for name in failed:
            log(f"the {name} check failed (its message is above)")
        return suite_status or (1 if failed else 0)
    finally:
        emulator.stop()
        recorder.stop()


# ---------------------------------------------------------------- chaos


class Scenario(NamedTuple):
    """One chaos stack: its FaultInjection ("" for none), other overrides, what the table shows as its
    faults, and whether the harness cuts its orders-table relay after the deploy (the sweep scenario)."""

    stack: str
    faults: str
    overrides: list[str]
    shown: str = ""
    cut_orders_relay: bool = False


# More deliveries than the suite's stack, so the faults are outlasted by retries rather than
# dead-lettered; where most provider calls fail, retries come back at once (no doubling backoff) and an
# open breaker probes again after a second, so the scenario settles in seconds instead of waiting out
# backoffs that the invariants do not depend on.
FAST_RETRIES = ["NotificationsRetryBaseSeconds=0", "BreakerOpenSeconds=1"]
CHAOS_SCENARIOS = {
    "payment": Scenario(
        "shop-chaos-payment",
        "payment=lost-response:0.3;payment=error:0.3",
        ["PaymentsMaxReceiveCount=40", *FAST_RETRIES],
    ),
    "send": Scenario("shop-chaos-send", "email=error:0.5;sms=error:0.5", ["NotificationsMaxReceiveCount=40", *FAST_RETRIES]),
    # The same faults on Stripe's calls (the Stripe emulator beside the emulator): the money is checked
    # against the emulator's own PaymentIntents and refunds.
    "stripe": Scenario(
        "shop-chaos-stripe",
        "payment=lost-response:0.3;payment=error:0.3",
        ["PaymentsMaxReceiveCount=40", *FAST_RETRIES, "PaymentProvider=stripe"],
    ),
    "transactions": Scenario("shop-chaos-tx", "dynamodb.TransactWriteItems=lost-response:0.3", []),
    # Also the restart scenario's stack: the orders whose events a restart lost are the sweep's.
    "publish": Scenario("shop-chaos-publish", "sns=error:0.5", FAST_SWEEP),
    # The events publisher's mapping on the orders stream is disabled once the stack is proven, so no
    # order event is ever relayed: only the sweep can settle its orders.
    "sweep": Scenario("shop-chaos-sweep", "", FAST_SWEEP, shown="publisher's orders mapping disabled", cut_orders_relay=True),
}
# The restart scenario runs on the publish stack's emulator, after the others: a restart stops every stack.
CHAOS_RESTART_STACK = "shop-chaos-publish"


def faults_injected(stack: str, endpoint: str) -> int:
    """How many "fault injected" lines the stack's functions logged (each one is logged)."""
    logs = client("logs", endpoint)
    count = 0
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{stack}-").get("logGroups", [])
    for group in groups:
        token = None
        while True:
            kwargs = {"logGroupName": group["logGroupName"], "filterPattern": '"fault injected"'}
            if token:
                kwargs["nextToken"] = token
            page = logs.filter_log_events(**kwargs)
            count += sum(1 for event in page.get("events", []) if "fault injected" in event.get("message", ""))
            token = page.get("nextToken")
            if not token:
                break
    return count


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float) -> None:
    """Until `path` exists (a marker a test writes), the test ends, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)


def cmd_chaos(args) -> int:
    """A private emulator with persisted state, one stack per fault scenario, the chaos suite
    (tests/chaos.rs) on them in parallel, then the restart scenario; one row per scenario."""
    import tempfile

    endpoint = f"http://127.0.0.1:{args.port}"
    if emulator_answers(endpoint):
        sys.exit(f"port {args.port} is taken by another emulator; the chaos suite needs its own")
    state_dir = Path(tempfile.mkdtemp(prefix="shop-chaos-"))
    report = state_dir / "report.jsonl"
    emulator = Emulator(endpoint, args.port, state_dir)
    try:
        from concurrent.futures import ThreadPoolExecutor

        def deploy_scenario(scenario: str, changed: list[str] | None = None) -> dict:
            spec = CHAOS_SCENARIOS[scenario]
            # SAM refuses an empty override ("FaultInjection="); the template's default is no faults.
            faults = [f"FaultInjection={spec.faults}"] if spec.faults else []
            info = deploy(argparse.Namespace(**{**vars(args), "stack": spec.stack}), emulator,
                          [*SUITE_OVERRIDES, *faults, *spec.overrides, *(changed or [])])
            if spec.cut_orders_relay:
                mappings.disable(spec.stack, "events-publisher", info["outputs"]["OrdersTableName"],
                                 lambda service: client(service, endpoint))
            stack = {"api_url": info["api_url"], "outputs": info["outputs"], "faults": spec.faults}
            if info.get("stripe"):
                # The test reads the emulator's books with the stack's own key.
                keys = stripe_keys(info["stripe"]["secret_name"], endpoint)
                stack["stripe"] = {"url": info["stripe"]["url"], "secret_key": keys["secret_key"]}
            return stack

        # The first deploy alone (it creates SAM's managed bucket), the others side by side.
        first, *others = CHAOS_SCENARIOS
        stacks = {first: deploy_scenario(first)}
        with ThreadPoolExecutor(max_workers=len(others)) as pool:
            stacks.update(zip(others, pool.map(deploy_scenario, others)))
        env = dict(os.environ)
        env.update(
            SHOP_CHAOS_STACKS=json.dumps(stacks),
            SHOP_CHAOS_REPORT=str(report),
            SHOP_ADMIN_EMAIL=args.admin_email,
            SHOP_ADMIN_PASSWORD=args.admin_password,
            SHOP_AWS_ENDPOINT_URL=endpoint,
        )
        test = ["cargo", "test", "--locked", "-p", "e2e", "--test", "chaos", "--", "--test-threads", "8"]
        log("running the fault scenarios in parallel")
        status = subprocess.run([*test, "--skip", "chaos_restart"], cwd=ROOT, env=env).returncode
        # Counted now: the emulator's logs do not outlive its restart.
        injected = {scenario: faults_injected(spec.stack, endpoint) for scenario, spec in CHAOS_SCENARIOS.items()}
        # The restart scenario: traffic starts; the emulator is stopped as Ctrl-C stops it (the clients
        # pause, the streams drain) and started again on its state; the traffic goes on.
        started, restarted = state_dir / "traffic-started", state_dir / "emulator-restarted"
        stopping, paused = state_dir / "emulator-stopping", state_dir / "traffic-paused"
        env.update(
            SHOP_CHAOS_TRAFFIC_STARTED=str(started), SHOP_CHAOS_RESTARTED=str(restarted),
            SHOP_CHAOS_STOPPING=str(stopping), SHOP_CHAOS_PAUSED=str(paused),
        )
        traffic = subprocess.Popen([*test, "chaos_restart"], cwd=ROOT, env=env)
        wait_for_file(started, traffic, 300)
        time.sleep(2)
        stopping.write_text("stopping")
        wait_for_file(paused, traffic, 60)
        log("restarting the emulator right after the traffic")
        drain_mappings(CHAOS_RESTART_STACK, emulator)
        emulator.stop()
        # Through the stream-position reset, then a changed parameter redeployed onto the persisted
        # state (one that updates the outbox's stream mappings), as `make dev PARAMS=...` does; the test
        # goes on once the stack is proven again (deploy proves it).
        emulator = Emulator(endpoint, args.port, state_dir)
        deploy_scenario("publish", changed=["OutboxMaxRetryAttempts=99"])
        restarted.write_text("restarted")
        status = traffic.wait() or status
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
        print("\n  chaos scenarios")
        print(f"  {'scenario':<14} {'faults':<48} {'operations':>10} {'injected':>9} {'violations':>10}")
        for row in rows:
            scenario = row["scenario"]
            spec = CHAOS_SCENARIOS.get(scenario)
            faults = (spec.shown or spec.faults) if spec else "emulator restart"
            count = injected.get(scenario, 1)
            print(f"  {scenario:<14} {faults:<48} {row['operations']:>10} {count:>9} {row['violations']:>10}")
        missing = {*CHAOS_SCENARIOS, "restart"} - {row["scenario"] for row in rows}
        if missing:
            print(f"  no result from: {', '.join(sorted(missing))}")
            status = status or 1
        return status
    finally:
        emulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, stack: str, port: int):
        p.add_argument("--stack", default=stack)
        p.add_argument("--port", type=int, default=port)
        p.add_argument("--admin-email", default=os.environ.get("SHOP_ADMIN_EMAIL", DEFAULT_ADMIN_EMAIL))
        p.add_argument("--admin-password", default=os.environ.get("SHOP_ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD))
        p.add_argument("--no-demo", action="store_true", help="do not create demo products")

    up = sub.add_parser("up", help="start the emulator if needed, build, deploy, seed")
    common(up, "shop-local", 4566)
    up.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C, then stop the emulator")
    up.add_argument("--ephemeral", action="store_true", help="no persisted state; stop the emulator on exit")
    up.add_argument(
        "--params", default=os.environ.get("PARAMS", ""),
        help="template parameter overrides, 'Name=Value Name2=Value2' (default: $PARAMS); a changed set redeploys",
    )
    up.add_argument(
        "--since", type=int, default=None,
        help="epoch second the caller started (make dev): the ready line counts from it",
    )
    up.add_argument(
        "--traces-port", type=int, default=0,
        help="also run Phoenix on this port and export every function's spans to it (make dev TRACES=1)",
    )
    up.set_defaults(func=cmd_up)

    metrics = sub.add_parser("metrics", help="the EMF metrics of the last minutes, from the functions' logs")
    metrics.add_argument("--stack", default="shop-local")
    metrics.add_argument("--minutes", type=float, default=15)
    metrics.add_argument("--aws", action="store_true", help="read the stack on AWS (default credentials)")
    metrics.set_defaults(func=cmd_metrics)

    endpoint = sub.add_parser("endpoint", help="print the emulator endpoint of a deployed local stack")
    endpoint.add_argument("--stack", default="shop-local")
    endpoint.set_defaults(func=cmd_endpoint)

    url = sub.add_parser("url", help="print the local API's base URL")
    url.add_argument("--stack", default="shop-local")
    url.add_argument("--websocket", action="store_true", help="print the WebSocket API's URL instead")
    url.set_defaults(func=cmd_url)

    e2e = sub.add_parser("e2e", help="run the end-to-end suite on a private emulator")
    common(e2e, "shop-e2e", 4577)
    e2e.add_argument(
        "--without-limits-stack", action="store_true",
        help="skip the tightly limited second stack (only for runs that filter out tests/limits.rs)",
    )
    e2e.add_argument(
        "--without-stripe-stack", action="store_true",
        help="skip the third stack, the one that charges through the Stripe emulator (only for runs that "
        "filter out the tests that pay with Stripe)",
    )
    e2e.add_argument("test_args", nargs="*")
    e2e.set_defaults(func=cmd_e2e, no_demo=True)

    chaos = sub.add_parser("chaos", help="run the chaos suite on a private emulator")
    common(chaos, "shop-chaos", 4579)
    chaos.set_defaults(func=cmd_chaos, no_demo=True)

    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
