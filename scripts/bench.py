#!/usr/bin/env python3
"""`make bench`: every performance figure of the shop, each beside its budget, in one run.

1. Builds release host (x86_64) bootstraps of every function and of a reference function
   (`bench/reference`: lambda_http + one DynamoDB GetItem), one cargo invocation; then the arm64
   release build (`cargo lambda build`, as `sam build` does) and zips each bootstrap.
2. Starts a private MiniStack, deploys the stack `shop-bench`, and runs the e2e tests that count
   DynamoDB round trips and time order-to-notification delivery against it.
3. Runs each bootstrap under this script's own Lambda Runtime API (MiniStack adds ~50 ms to every
   invocation, so it cannot time anything): cold start, first call, warm calls and peak RSS, the
   contenders alternating over several rounds with the reference run before each of them; every
   function talks to the emulator's real tables with the environment it is deployed with.
4. Counts the DynamoDB requests of 100 GETs of 5 hot products on one warm products-get instance,
   catalogue cache on and off, through a counting proxy; the same counts give the rate limiter's
   writes per request.

A missed budget is printed as MISSED and leaves the exit status 0; a figure that could not be
measured makes it 1. Runs under the SAM venv (.venv/sam: boto3, cargo-lambda and its zig).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import io
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import zipfile
from collections import Counter
from itertools import cycle
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import local_stack  # noqa: E402 - a sibling script, importable once scripts/ is on the path
from local_stack import LOCAL_DIR, REGION, ROOT, VENV, Emulator, SUITE_OVERRIDES, api_base, deploy  # noqa: E402

REFERENCE = "bench-reference"
# orders-create once more, exporting its spans (OTLP_ENDPOINT) to a sink of this script: the cold
# start with exporting on, beside the same bootstrap with it off.
TRACED = "orders-create+otlp"
# graphql refusing a hostile document (events/graphql.hostile.json: fragments that each spread the next
# twice, 64 levels): its warm latency beside the budget of a refusal.
REFUSAL = "graphql-refusal"
REFUSAL_BUDGET_MS = 50
INIT_RATIO_BUDGET = 1.5
RSS_BUDGET_KIB = 15 * 1024
ZIP_BUDGET_BYTES = 3 * 1024 * 1024
CACHED_READS_BUDGET = 5
CACHE_GETS = 100
HOT_PRODUCTS = 5
# Notification recipients the worker's events cycle through: one recipient getting every message would
# grow a history far past the hourly cap (20 by default), making each cap check read hundreds of items.
RECIPIENTS = 20
# Orders, notifications and adjustments the customer's and the inspected product's reads find.
HISTORY = 12

# Generous for a 2-core machine where a release build of every function takes 10+ minutes.
BUILD_TIMEOUT_S = 90 * 60
E2E_TIMEOUT_S = 30 * 60
INIT_TIMEOUT_S = 10.0
# The functions' Timeout in template.yaml, plus a margin for this harness.
INVOKE_TIMEOUT_S = 12.0

# What the sample events in events/ carry, replaced by real values so that each call does real work.
TOKEN = "REPLACE_WITH_ACCESS_TOKEN_FROM_POST_/api/auth/login"
SAMPLE_PRODUCT = "0190f5a4-7b3e-7c1a-9d2e-000000000001"
SAMPLE_SECOND_PRODUCT = "0190f5a4-7b3e-7c1a-9d2e-000000000002"
SAMPLE_ORDER = "0190f5a4-7b3e-7c1a-9d2e-0000000000a1"
SAMPLE_BUYER = "0190f5a4-7b3e-7c1a-9d2e-0000000000b1"
SAMPLE_USER = "0190f5a4-7b3e-7c1a-9d2e-3f4a5b6c7d8e"
SAMPLE_EVENT_ID = "6f1c2a9e0d4b4c7e8a1f3b5d7c9e0a12"
SAMPLE_NEW_EMAIL = "Ada@Example.com"
SAMPLE_LOGIN_EMAIL = "ada@example.com"
SAMPLE_PROMOTED_EMAIL = "ops@example.com"
SAMPLE_NEW_PRODUCT_CATEGORY = r'\"category\": \"kitchen\"'
SAMPLE_TABLES = {"shop-UsersTable-1": "USERS_TABLE", "shop-OrdersTable-1": "ORDERS_TABLE", "shop-ProductsTable-1": "PRODUCTS_TABLE"}
# The sample events' password: bench accounts use it, so auth-login's sample body needs only its email.
PASSWORD = "correct horse battery"

# The e2e tests behind the existing figures (the Makefile's former `bench` target) and their lines.
E2E_FILTERS = ["takes_two", "take_two", "arrive_promptly"]
E2E_FIGURE = re.compile(r"(round trips: .*|order->notification .*)$")

DYNAMODB_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


class MeasureError(Exception):
    """A figure could not be measured (as opposed to a budget being missed)."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- builds


def build_host_release(crates: list[str]) -> dict[str, Path]:
    """Release x86_64 bootstraps of `crates` in one cargo invocation (cargo skips what is fresh)."""
    log(f"release host build of {len(crates)} crates")
    command = ["cargo", "build", "--release", "--locked", *[arg for crate in crates for arg in ("-p", crate)]]
    subprocess.run(command, cwd=ROOT, check=True, timeout=BUILD_TIMEOUT_S)
    return {crate: ROOT / "target" / "release" / crate for crate in crates}


def arm64_zip_sizes(crates: list[str]) -> dict[str, int]:
    """The size of each function's arm64 release zip, built the way `sam build` builds it."""
    log(f"arm64 release build of {len(crates)} functions (cargo lambda)")
    lambda_dir = ROOT / "target" / "lambda-arm64"
    command = [
        "cargo", "lambda", "build", "--release", "--arm64", "--locked",
        "--lambda-dir", str(lambda_dir), *[arg for crate in crates for arg in ("-p", crate)],
    ]
    # cargo-lambda finds its zig only when the SAM venv's bin/ comes first on PATH.
    env = {**os.environ, "PATH": f"{VENV / 'sam' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=BUILD_TIMEOUT_S)
    sizes = {}
    for crate in crates:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            archive.write(lambda_dir / crate / "bootstrap", "bootstrap")
        sizes[crate] = buffer.getbuffer().nbytes
    return sizes


# ---------------------------------------------------------------- Lambda Runtime API harness


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    done: threading.Event = field(default_factory=threading.Event)
    sent_ns: int = 0
    answered_ns: int = 0
    outcome: str = ""
    body: bytes = b""


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A killed instance resets its connection: expected, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RuntimeApi(QuietServer):
    """The Lambda Runtime API of one instance: /next hands out queued invocations; /response and
    /error complete them, timestamped on arrival."""

    NEXT = "/2018-06-01/runtime/invocation/next"
    ANSWER = re.compile(r"/2018-06-01/runtime/invocation/([^/]+)/(response|error)")
    INIT_ERROR = "/2018-06-01/runtime/init/error"

    def __init__(self, function_arn: str):
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.function_arn = function_arn
        self.invocations: queue.Queue[Invocation | None] = queue.Queue()
        self.pending: dict[str, Invocation] = {}
        self.first_poll_ns = 0
        self.polled = threading.Event()
        self.init_error: str | None = None


class RuntimeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeApi

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the overridden signature
        """Quiet: one line per request would swamp the report."""

    def do_GET(self) -> None:
        arrived = time.perf_counter_ns()
        if self.path != RuntimeApi.NEXT:
            self.reply(404, b"{}")
            return
        if not self.server.polled.is_set():
            self.server.first_poll_ns = arrived
            self.server.polled.set()
        invocation = self.server.invocations.get()
        if invocation is None:  # the instance is being stopped
            self.close_connection = True
            return
        deadline_ms = int(time.time() * 1000 + INVOKE_TIMEOUT_S * 1000)
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.server.function_arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0",
        }
        self.server.pending[invocation.request_id] = invocation
        self.reply(200, invocation.payload, headers, sent=invocation)

    def do_POST(self) -> None:
        arrived = time.perf_counter_ns()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = RuntimeApi.ANSWER.fullmatch(self.path)
        if answer and answer[1] in self.server.pending:
            invocation = self.server.pending.pop(answer[1])
            invocation.answered_ns, invocation.outcome, invocation.body = arrived, answer[2], body
            invocation.done.set()
        elif self.path == RuntimeApi.INIT_ERROR:
            self.server.init_error = body.decode(errors="replace")
        else:
            self.reply(404, b"{}")
            return
        self.reply(202, b'{"status":"OK"}')

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None, sent: Invocation | None = None) -> None:
        # One write of the whole response, so that `sent_ns` is when the event leaves, not a header.
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        if sent is not None:
            sent.sent_ns = time.perf_counter_ns()
        self.wfile.write(raw)
        self.wfile.flush()


@dataclass
class Bootstrap:
    """A release bootstrap with the environment its function is deployed with."""

    name: str
    binary: Path
    env: dict[str, str]
    arn: str


@dataclass
class Contender:
    """A bootstrap and the source of the events it is called with."""

    bootstrap: Bootstrap
    event: Callable[[], str]


class Instance:
    """One bootstrap process (one cold start) serving invocations through its own Runtime API."""

    def __init__(self, contender: Contender, logs: IO[bytes]):
        self.event = contender.event
        bootstrap = contender.bootstrap
        self.api = RuntimeApi(bootstrap.arn)
        threading.Thread(target=self.api.serve_forever, daemon=True).start()
        env = {**bootstrap.env, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.api.server_address[1]}"}
        self.spawned_ns = time.perf_counter_ns()
        self.process = subprocess.Popen([str(bootstrap.binary)], env=env, stdin=subprocess.DEVNULL, stdout=logs, stderr=logs)

    def init_ns(self) -> int:
        """From the spawn to the first GET /next."""
        deadline = time.monotonic() + INIT_TIMEOUT_S
        while not self.api.polled.wait(0.05):
            if self.api.init_error is not None:
                raise MeasureError(f"init failed: {self.api.init_error[:300]}")
            if self.process.poll() is not None:
                raise MeasureError(f"exited with {self.process.returncode} before its first poll")
            if time.monotonic() > deadline:
                raise MeasureError(f"no poll within {INIT_TIMEOUT_S:.0f} s")
        return self.api.first_poll_ns - self.spawned_ns

    def invoke(self) -> tuple[int, Any]:
        """Hands the contender's next event over and returns (latency in ns, checked response)."""
        text = self.event()
        invocation = Invocation(str(uuid.uuid4()), text.encode())
        self.api.invocations.put(invocation)
        if not invocation.done.wait(INVOKE_TIMEOUT_S):
            raise MeasureError(f"no answer within {INVOKE_TIMEOUT_S:.0f} s (process {'alive' if self.process.poll() is None else 'exited'})")
        if invocation.outcome == "error":
            raise MeasureError(f"invocation error: {invocation.body.decode(errors='replace')[:300]}")
        response = json.loads(invocation.body or b"null")
        problem = check(json.loads(text), response)
        if problem:
            raise MeasureError(problem)
        return invocation.answered_ns - invocation.sent_ns, response

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if not match:
            raise MeasureError("no VmHWM in /proc/<pid>/status")
        return int(match[1])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self.api.invocations.put(None)
        self.api.shutdown()
        self.api.server_close()


@contextmanager
def running(contender: Contender, logs: IO[bytes]) -> Iterator[Instance]:
    instance = Instance(contender, logs)
    try:
        yield instance
    finally:
        instance.stop()


def check(event: Any, response: Any) -> str | None:
    """Why a response is not the real work its event asks for, if it is not: a 4xx is a cheap call
    and would flatter the figure."""
    if isinstance(event, dict) and "routeKey" in event:
        answer = response if isinstance(response, dict) else {}
        status = answer.get("statusCode", 0)
        return None if 200 <= status < 300 else f"{event['routeKey']} answered {status}: {str(answer.get('body'))[:300]}"
    failed = (response or {}).get("batchItemFailures", []) if isinstance(event, dict) and "Records" in event else []
    return f"batch items failed: {failed}" if failed else None


def describe(event: dict) -> str:
    """The request a contender is measured with, for the table."""
    if "routeKey" in event:
        return event["routeKey"]
    records = event.get("Records")
    if not records:
        return f"invoke {json.dumps(sorted(event))}"
    if records[0].get("eventSource") == "aws:sqs":
        return "SQS " + " + ".join(json.loads(record["body"])["event_type"] for record in records if is_json(record["body"]))
    return f"stream batch, {len(records)} records"


# ---------------------------------------------------------------- counting proxy


class CountingProxy(QuietServer):
    """Forwards every request to the emulator and counts DynamoDB operations per table."""

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter(self.counts)


class OtlpSink(QuietServer):
    """Answers OTLP/HTTP exports (POST /v1/traces) at once and counts them: a collector that costs nothing."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), OtlpSinkHandler)
        self.exports = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class OtlpSinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OtlpSink

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/v1/traces":
            with self.server.lock:
                self.server.exports += 1
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the overridden signature
        """Quiet."""

    def forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith("DynamoDB_"):
            table = str(json.loads(body or b"{}").get("TableName", ""))
            with self.server.lock:
                self.server.counts[(target.split(".", 1)[1], table)] += 1
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=10)
        try:
            upstream.request(self.command, self.path, body, dict(self.headers))
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward


# ---------------------------------------------------------------- the shop the events act on


def sample(function: str) -> str:
    return (ROOT / "events" / f"{function}.json").read_text()


def substitute(text: str, values: dict[str, str]) -> str:
    """`text` with each placeholder replaced; a placeholder the sample no longer has is an error, so
    that a changed sample cannot silently turn a call into a cheap one."""
    for placeholder, value in values.items():
        if placeholder not in text:
            raise MeasureError(f"the sample event has no {placeholder!r} to replace")
        text = text.replace(placeholder, value)
    return text


def is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def unique_email() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class Account:
    id: str
    email: str
    token: str


def api_call(method: str, url: str, body: dict | None, token: str | None, expect: int) -> dict:
    status, answer = local_stack.http(method, url, body, token)
    if status != expect:
        raise MeasureError(f"{method} {url} answered {status}, expected {expect}: {answer}")
    return answer


def new_user(base: str, name: str, phone: str | None = None) -> dict:
    body = {"email": unique_email(), "password": PASSWORD, "name": name} | ({"phone": phone} if phone else {})
    return api_call("POST", f"{base}/api/users", body, None, 201)


def register(base: str, name: str, phone: str | None = None) -> Account:
    user = new_user(base, name, phone)
    login = api_call("POST", f"{base}/api/auth/login", {"email": user["email"], "password": PASSWORD}, None, 200)
    return Account(user["id"], user["email"], login["access_token"])


@dataclass
class Shop:
    """The accounts, products and orders the bench events act on."""

    admin_token: str
    customer: Account  # reads its own small history: users-me, orders-list/get/details, notifications
    buyer: Account  # places, pays, cancels the bench's many orders, so the customer's lists stay small
    recipients: list[str]
    promoted_email: str
    hot_products: list[str]
    edited_product: str
    inspected_product: str
    tables: dict[str, str]
    customer_order: str = ""
    buyer_order: str = ""
    to_pay: list[str] = field(default_factory=list)
    to_cancel: list[str] = field(default_factory=list)
    to_ship: list[str] = field(default_factory=list)


def create_shop(base: str, admin_email: str, admin_password: str, tables: dict[str, str]) -> Shop:
    log("creating the bench's accounts and products through the API")
    admin = api_call("POST", f"{base}/api/auth/login", {"email": admin_email, "password": admin_password}, None, 200)
    admin_token = admin["access_token"]
    customer = register(base, "Bench Customer", phone="+14155550123")
    buyer = register(base, "Bench Buyer")
    recipients = [new_user(base, f"Bench Recipient {i}")["id"] for i in range(RECIPIENTS)]
    promoted = new_user(base, "Bench Operator")

    def product(name: str, category: str, price: int) -> str:
        body = {"name": name, "category": category, "price": price, "stock_quantity": 1_000_000}
        return api_call("POST", f"{base}/api/products", body, admin_token, 201)["id"]

    # In products-list's sample filter (kitchen, 10.00-50.00), with stock for thousands of orders.
    hot = [product(f"Bench product {i}", "kitchen", 1000 + 500 * i) for i in range(HOT_PRODUCTS)]
    # PATCHed and adjusted over and over, so kept out of the listing, the hot set and inventory-get's
    # reads (whose adjustment history would otherwise grow through the run).
    edited = product("Bench edited product", "bench", 2500)
    inspected = product("Bench inspected product", "bench", 2500)
    return Shop(admin_token, customer, buyer, recipients, promoted["email"], hot, edited, inspected, tables)


# ws-default's connection: recorded once for the customer, apart from the samples' connection, which
# ws-connect records and ws-disconnect forgets in whichever order the rounds run them.
FRAME_CONNECTION = "BenchFrameConn="


def record_frame_connection(endpoint: str, table: str, user_id: str) -> None:
    """Records FRAME_CONNECTION as the customer's open connection, for a day (a frame on a connection
    not recorded is refused and the connection closed)."""
    local_stack.client("dynamodb", endpoint).put_item(
        TableName=table,
        Item={
            "connection_id": {"S": FRAME_CONNECTION},
            "user_id": {"S": user_id},
            "connected_at": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "expires_at": {"N": str(int(time.time()) + 86_400)},
        },
    )


def order_event(shop: Shop, token: str) -> str:
    return substitute(sample("orders-create"), {TOKEN: token, SAMPLE_PRODUCT: shop.hot_products[0], SAMPLE_SECOND_PRODUCT: shop.hot_products[1]})


def worker_event(function: str, shop: Shop, order_id: str, user_id: str) -> str:
    """An SQS sample about `order_id` of `user_id`, with a fresh event id (the workers drop repeats)."""
    text = substitute(
        sample(function),
        {SAMPLE_EVENT_ID: uuid.uuid4().hex, SAMPLE_ORDER: order_id, SAMPLE_BUYER: user_id, SAMPLE_PRODUCT: shop.hot_products[0]},
    )
    event = json.loads(text)
    # Without the sample's malformed message, whose retry delay the worker would try to set with the
    # sample's fake receipt handle: a failing SQS call that is no part of its real work.
    event["Records"] = [record for record in event["Records"] if is_json(record["body"])]
    return json.dumps(event)


def events(shop: Shop) -> dict[str, Callable[[], str]]:
    """Function -> the next event to measure it with."""

    def fixed(function: str, values: dict[str, str]) -> Callable[[], str]:
        text = substitute(sample(function), values)
        return lambda: text

    def take(pool: list[str]) -> str:
        if not pool:
            raise MeasureError("no prepared order left")
        return pool.pop()

    customer, buyer, admin = shop.customer, shop.buyer, shop.admin_token
    recipients = cycle(shop.recipients)

    return {
        "health": fixed("health", {}),
        "docs-openapi": fixed("docs-openapi", {}),
        "docs-page": fixed("docs-page", {}),
        "users-create": lambda: substitute(sample("users-create"), {SAMPLE_NEW_EMAIL: unique_email()}),
        "auth-login": fixed("auth-login", {SAMPLE_LOGIN_EMAIL: customer.email}),
        "users-me": fixed("users-me", {TOKEN: customer.token}),
        "users-get": fixed("users-get", {TOKEN: admin, SAMPLE_USER: customer.id}),
        "products-list": fixed("products-list", {}),
        "products-get": fixed("products-get", {SAMPLE_PRODUCT: shop.hot_products[0]}),
        # Its products stay out of products-list's filter, so the listing reads the same in every round.
        "products-create": fixed("products-create", {TOKEN: admin, SAMPLE_NEW_PRODUCT_CATEGORY: r'\"category\": \"bench\"'}),
        "products-update": fixed("products-update", {TOKEN: admin, SAMPLE_PRODUCT: shop.edited_product}),
        "inventory-get": fixed("inventory-get", {TOKEN: admin, SAMPLE_PRODUCT: shop.inspected_product}),
        "inventory-adjust": fixed("inventory-adjust", {TOKEN: admin, SAMPLE_PRODUCT: shop.edited_product}),
        "orders-create": lambda: order_event(shop, buyer.token),
        TRACED: lambda: order_event(shop, buyer.token),
        REFUSAL: fixed("graphql.hostile", {}),
        "orders-list": fixed("orders-list", {TOKEN: customer.token}),
        "orders-get": fixed("orders-get", {TOKEN: customer.token, SAMPLE_ORDER: shop.customer_order}),
        "orders-details": fixed("orders-details", {TOKEN: customer.token, SAMPLE_ORDER: shop.customer_order}),
        # An order with its buyer and products: the batched (two round trip) GraphQL path.
        "graphql": fixed("graphql.order", {TOKEN: customer.token, SAMPLE_ORDER: shop.customer_order}),
        "orders-cancel": lambda: substitute(sample("orders-cancel"), {TOKEN: buyer.token, SAMPLE_ORDER: take(shop.to_cancel)}),
        "orders-ship": lambda: substitute(sample("orders-ship"), {TOKEN: admin, SAMPLE_ORDER: take(shop.to_ship)}),
        "notifications-history": fixed("notifications-history", {TOKEN: customer.token}),
        "payments-worker": lambda: worker_event("payments-worker", shop, take(shop.to_pay), buyer.id),
        "notifications-worker": lambda: worker_event("notifications-worker", shop, shop.buyer_order, next(recipients)),
        "events-publisher": fixed("events-publisher", {name: shop.tables[var] for name, var in SAMPLE_TABLES.items()}),
        "users-promote": fixed("users-promote", {SAMPLE_PROMOTED_EMAIL: shop.promoted_email}),
        # A scheduled sweep: one Query of each of the index's 16 partitions (nothing is stuck here).
        "orders-sweeper": fixed("orders-sweeper", {}),
        # The WebSocket routes: a verified handshake recorded and counted (a PutItem, a Query), a close, a client frame.
        "ws-connect": fixed("ws-connect", {TOKEN: customer.token}),
        "ws-disconnect": fixed("ws-disconnect", {}),
        # A client frame of the customer's recorded connection: its user read, the frame counted.
        "ws-default": fixed("ws-default", {"Jd1VbfBsoAMCKvA=": FRAME_CONNECTION}),
        # A placement and a confirmation of the customer's order: one Query of their connections each.
        "ws-pusher": fixed("ws-pusher", {SAMPLE_BUYER: customer.id}),
        REFERENCE: fixed("products-get", {SAMPLE_PRODUCT: shop.hot_products[0]}),
    }


def prepare_orders(shop: Shop, bootstraps: dict[str, Bootstrap], per_pool: int, logs: Mapping[str, IO[bytes]]) -> None:
    """Orders for the calls that consume one each (cancel, ship, pay), plus the customer's orders and
    notifications and the inspected product's adjustments, made by the release bootstraps under this
    harness: through the emulator's API, 1,500 orders would take minutes."""
    log(f"preparing {3 * per_pool} orders for orders-cancel, orders-ship and payments-worker")

    def run(function: str, texts: list[str]) -> list[Any]:
        feed = iter(texts)
        with running(Contender(bootstraps[function], lambda: next(feed)), logs[function]) as instance:
            instance.init_ns()
            return [instance.invoke()[1] for _ in texts]

    def placed(responses: list[Any]) -> list[str]:
        return [json.loads(response["body"])["id"] for response in responses]

    adjust = substitute(sample("inventory-adjust"), {TOKEN: shop.admin_token, SAMPLE_PRODUCT: shop.inspected_product})
    run("inventory-adjust", [adjust] * HISTORY)
    customer_orders = placed(run("orders-create", [order_event(shop, shop.customer.token) for _ in range(HISTORY)]))
    shop.customer_order = customer_orders[0]
    # The customer's history gets a page of notifications for notifications-history to read.
    run("notifications-worker", [worker_event("notifications-worker", shop, order, shop.customer.id) for order in customer_orders])
    shop.buyer_order, *buyer_orders = placed(run("orders-create", [order_event(shop, shop.buyer.token) for _ in range(3 * per_pool + 1)]))
    shop.to_pay = buyer_orders[:per_pool]
    shop.to_cancel = buyer_orders[per_pool : 2 * per_pool]
    shop.to_ship = buyer_orders[2 * per_pool :]
    # Paid (CONFIRMED) first: only a confirmed order ships.
    run("payments-worker", [worker_event("payments-worker", shop, order, shop.buyer.id) for order in shop.to_ship])


# ---------------------------------------------------------------- measuring


@dataclass
class ColdStart:
    init_ms: float
    first_ms: float
    warm_ms: list[float]
    rss_kib: int


@dataclass
class Figures:
    runs: list[ColdStart] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, value: Callable[[ColdStart], float]) -> float:
        return statistics.median(value(run) for run in self.runs)

    def percentile(self, share: float) -> float:
        """Over the warm calls of every round together."""
        warm = sorted(ms for run in self.runs for ms in run.warm_ms)
        return warm[max(0, round(share * len(warm)) - 1)]


def cold_start(contender: Contender, warm: int, logs: IO[bytes]) -> ColdStart:
    with running(contender, logs) as instance:
        init_ns = instance.init_ns()
        first_ns, _ = instance.invoke()
        warm_ns = [instance.invoke()[0] for _ in range(warm)]
        return ColdStart(init_ns / 1e6, first_ns / 1e6, [ns / 1e6 for ns in warm_ns], instance.peak_rss_kib())


def measure(functions: list[Contender], reference: Contender, rounds: int, warm: int, logs: Mapping[str, IO[bytes]]) -> dict[str, Figures]:
    figures = {contender.bootstrap.name: Figures() for contender in [reference, *functions]}
    for index in range(rounds):
        # Rotated each round, so no function always runs first or after the same neighbour.
        shift = index % len(functions)
        for function in functions[shift:] + functions[:shift]:
            # The reference runs right before each function: the two meet the same machine state.
            for contender in (reference, function):
                name = contender.bootstrap.name
                try:
                    figures[name].runs.append(cold_start(contender, warm, logs[name]))
                except MeasureError as error:
                    figures[name].errors.append(f"round {index + 1}: {error}")
        log(f"round {index + 1} of {rounds} done")
    return figures


@dataclass
class CacheCounts:
    reads: int
    writes: int
    limiter_writes: int


def count_catalogue_requests(products_get: Bootstrap, shop: Shop, endpoint: str, cache_seconds: int, logs: IO[bytes]) -> CacheCounts:
    """DynamoDB requests of CACHE_GETS GETs of the hot products, round robin, on one warm instance."""
    proxy = CountingProxy(endpoint)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    texts = [substitute(sample("products-get"), {SAMPLE_PRODUCT: product}) for product in shop.hot_products]
    calls = iter(range(CACHE_GETS))
    env = {**products_get.env, "AWS_ENDPOINT_URL": proxy.url, "CATALOGUE_CACHE_SECONDS": str(cache_seconds)}
    counted = Contender(Bootstrap(products_get.name, products_get.binary, env, products_get.arn), lambda: texts[next(calls) % len(texts)])
    try:
        with running(counted, logs) as instance:
            instance.init_ns()
            before = proxy.snapshot()
            for _ in range(CACHE_GETS):
                instance.invoke()
            delta = proxy.snapshot() - before
    finally:
        proxy.shutdown()
        proxy.server_close()
    guards = shop.tables["GUARDS_TABLE"]
    return CacheCounts(
        reads=sum(n for (op, _), n in delta.items() if op in DYNAMODB_READS),
        writes=sum(n for (op, _), n in delta.items() if op in DYNAMODB_WRITES),
        limiter_writes=sum(n for (op, table), n in delta.items() if op in DYNAMODB_WRITES and table == guards),
    )


def e2e_figures(info: dict, args: argparse.Namespace, endpoint: str) -> list[str]:
    """The lines the round-trip and notification-latency e2e tests print, run against this stack."""
    env = {**os.environ, **local_stack.suite_env(info, args, endpoint)}
    log(f"e2e figures: {' '.join(E2E_FILTERS)}")
    command = [
        "cargo", "test", "--locked", "-p", "e2e", "--tests", "--",
        "--nocapture", "--test-threads", "1", "--skip", "chaos_", *E2E_FILTERS,
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=E2E_TIMEOUT_S)
    lines = [match[1] for line in result.stdout.splitlines() if (match := E2E_FIGURE.search(line))]
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-6000:])
        raise MeasureError(f"the e2e figure tests failed (exit {result.returncode}); printed so far: {lines}")
    return lines


def pause_event_sources(stack_functions: set[str], endpoint: str) -> None:
    """Stops the emulator's stream and queue consumers of the stack: the harness writes thousands of
    orders, and the debug workers reacting to them would load the machine during the timings."""
    lam = local_stack.client("lambda", endpoint)
    paused = 0
    for mapping in lam.list_event_source_mappings()["EventSourceMappings"]:
        if mapping["FunctionArn"].rsplit(":", 1)[-1] in stack_functions:
            lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
            paused += 1
    log(f"paused {paused} event source mappings")


def bootstraps_of(crates: dict[str, str], binaries: dict[str, Path], endpoint: str) -> dict[str, Bootstrap]:
    """Crate -> its release bootstrap with the environment it is deployed with (plus what Lambda and
    the emulator add), and the reference with the products table."""
    lam = local_stack.client("lambda", endpoint)

    def lambda_env(name: str, arn: str) -> dict[str, str]:
        return {
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            # lambda_runtime only reports it (the Context), so no figure depends on it.
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            # MiniStack gives its functions its own endpoint; so does the harness.
            "AWS_ENDPOINT_URL": endpoint,
            "_HANDLER": "bootstrap",
        }

    bootstraps = {}
    for crate, function_name in crates.items():
        config = lam.get_function_configuration(FunctionName=function_name)
        env = {**config.get("Environment", {}).get("Variables", {}), **lambda_env(function_name, config["FunctionArn"])}
        bootstraps[crate] = Bootstrap(crate, binaries[crate], env, config["FunctionArn"])
    products_table = bootstraps["products-get"].env["PRODUCTS_TABLE"]
    arn = f"arn:aws:lambda:{REGION}:000000000000:function:{REFERENCE}"
    env = {"PRODUCTS_TABLE": products_table, **lambda_env(REFERENCE, arn)}
    bootstraps[REFERENCE] = Bootstrap(REFERENCE, binaries[REFERENCE], env, arn)
    return bootstraps


# ---------------------------------------------------------------- report


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def print_report(
    figures: dict[str, Figures],
    requests: dict[str, str],
    zips: dict[str, int],
    cache: dict[int, CacheCounts],
    e2e: list[str],
    args: argparse.Namespace,
    exports: int,
) -> int:
    """Prints every figure beside its budget; returns how many budgets were missed."""
    missed = 0
    reference = figures[REFERENCE]
    ref_init = reference.median(lambda run: run.init_ms) if reference.runs else None
    print(f"\n  make bench: stack {args.stack} on MiniStack 127.0.0.1:{args.port}, release x86_64 bootstraps "
          f"(the workspace release profile: opt-level z, fat LTO, panic=abort, strip)")
    print(f"\n  Cold start, latency, memory: this script's Lambda Runtime API; {args.rounds} rounds, every function "
          f"spawned cold once per round,\n  the reference ({REFERENCE}) right before each; init, first call and RSS "
          f"are medians of the rounds, warm p50/p99 over all {args.rounds} x {args.warm} warm calls.")
    print("  init = spawn to first GET /next; first = event handed over to response received; RSS = VmHWM.")
    print(f"  Budgets: init <= {INIT_RATIO_BUDGET}x the reference's; peak RSS <= {RSS_BUDGET_KIB // 1024} MiB.\n")
    header = (
        f"  {'function':<22} {'measured with':<44} {'init ms':>7} {'(min-max)':>11} {'x ref':>5} {'':<6} "
        f"{'first ms':>8} {'p50 ms':>6} {'p99 ms':>6} {'RSS MiB':>7} {'':<6}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name in [REFERENCE, *sorted(n for n in figures if n != REFERENCE)]:
        result = figures[name]
        if not result.runs:
            print(f"  {name:<22} {requests[name]:<44} not measured: {'; '.join(result.errors)[:200]}")
            continue
        init = result.median(lambda run: run.init_ms)
        rss = result.median(lambda run: run.rss_kib)
        if name == REFERENCE or ref_init is None:
            ratio, init_verdict = ("1.00", "ref") if name == REFERENCE else ("?", "?")
        else:
            init_met = init <= INIT_RATIO_BUDGET * ref_init
            missed += not init_met
            ratio, init_verdict = f"{init / ref_init:.2f}", verdict(init_met)
        rss_met = rss <= RSS_BUDGET_KIB
        missed += not rss_met and name != REFERENCE
        inits = [run.init_ms for run in result.runs]
        print(
            f"  {name:<22} {requests[name]:<44} {init:>7.1f} {f'({min(inits):.1f}-{max(inits):.1f})':>11} {ratio:>5} {init_verdict:<6} "
            f"{result.median(lambda run: run.first_ms):>8.2f} {result.percentile(0.5):>6.2f} {result.percentile(0.99):>6.2f} "
            f"{rss / 1024:>7.1f} {verdict(rss_met) if name != REFERENCE else 'ref':<6}"
        )
        for error in result.errors:
            print(f"  {'':<22} not measured in {error[:250]}")

    on, off = figures[TRACED], figures["orders-create"]
    if on.runs and off.runs:
        on_init, off_init = on.median(lambda run: run.init_ms), off.median(lambda run: run.init_ms)
        print(
            f"\n  Exporting spans (OTLP_ENDPOINT set, {TRACED}) vs not (orders-create), same bootstrap: init "
            f"{on_init:.1f} vs {off_init:.1f} ms, warm p50 {on.percentile(0.5):.2f} vs {off.percentile(0.5):.2f} ms, "
            f"p99 {on.percentile(0.99):.2f} vs {off.percentile(0.99):.2f} ms;\n  {exports} export requests reached "
            f"the sink (one per invocation: spans are flushed before each answer)."
        )

    refusal = figures[REFUSAL]
    if refusal.runs:
        refusal_met = refusal.percentile(0.99) <= REFUSAL_BUDGET_MS
        missed += not refusal_met
        print(
            f"\n  GraphQL refusal of a 64-level fragment chain ({REFUSAL}, events/graphql.hostile.json): warm p50 "
            f"{refusal.percentile(0.5):.2f} ms, p99 {refusal.percentile(0.99):.2f} ms. Budget: p99 <= "
            f"{REFUSAL_BUDGET_MS} ms {verdict(refusal_met)}"
        )

    print("\n  arm64 release zips (cargo lambda build --release --arm64; python zipfile, deflate level 9)")
    print(f"  Budget: <= 3 MiB = {ZIP_BUDGET_BYTES:,} bytes each.\n")
    print(f"  {'function':<22} {'bytes':>10} {'MiB':>6}")
    for name, size in sorted(zips.items()):
        met = size <= ZIP_BUDGET_BYTES
        missed += not met
        print(f"  {name:<22} {size:>10,} {size / 2**20:>6.2f} {verdict(met)}")

    print(f"\n  DynamoDB requests of {CACHE_GETS} GETs of {HOT_PRODUCTS} hot products on one warm products-get instance")
    print(f"  (counted by X-Amz-Target at a proxy between the function and the emulator). Budget: cached reads <= {CACHED_READS_BUDGET}.\n")
    print(f"  {'catalogue cache':<32} {'reads':>6} {'writes':>7}")
    for seconds, counts in cache.items():
        label = f"on (CATALOGUE_CACHE_SECONDS={seconds})" if seconds else "off (CATALOGUE_CACHE_SECONDS=0)"
        budget = ""
        if seconds:
            met = counts.reads <= CACHED_READS_BUDGET
            missed += not met
            budget = verdict(met)
        print(f"  {label:<32} {counts.reads:>6} {counts.writes:>7} {budget}")
    if cache:
        writes, served = sum(counts.limiter_writes for counts in cache.values()), CACHE_GETS * len(cache)
        per_request = writes / served
        print(f"\n  Rate limiter: {per_request:.3f} DynamoDB writes per request ({writes} writes to the guards table for the "
              f"{served} GETs above; a window roll-over costs more) = {per_request * 1e6:,.0f} writes per million requests")

    print(f"\n  DynamoDB round trips and order-to-notification latency (e2e tests {' '.join(E2E_FILTERS)}, same stack;")
    print("  MiniStack adds ~50 ms per invocation, so the latency is an upper bound of AWS's):\n")
    for line in e2e:
        print(f"  {line}")
    return missed


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="shop-bench")
    parser.add_argument("--port", type=int, default=4578)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm", type=int, default=100, help="warm invocations after the first, per cold start")
    parser.add_argument("--admin-email", default=os.environ.get("SHOP_ADMIN_EMAIL", local_stack.DEFAULT_ADMIN_EMAIL))
    parser.add_argument("--admin-password", default=os.environ.get("SHOP_ADMIN_PASSWORD", local_stack.DEFAULT_ADMIN_PASSWORD))
    args = parser.parse_args()
    args.no_demo = True  # deploy() seeds only the admin; the bench makes its own products

    endpoint = f"http://127.0.0.1:{args.port}"
    if local_stack.emulator_answers(endpoint):
        sys.exit(f"port {args.port} is taken by another emulator; the bench needs its own")
    template = local_stack.load_template()
    logical_crates = {logical: function["crate"] for logical, function in local_stack.template_functions(template).items()}
    crates = sorted(logical_crates.values())
    failures: list[str] = []
    try:
        binaries = build_host_release([*crates, REFERENCE])
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        print(f"  Measuring FAILED: the release host build failed ({error})")
        return 1
    try:
        zips = arm64_zip_sizes(crates)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        failures.append(f"arm64 zips: {error}")
        zips = {}

    log_dir = LOCAL_DIR / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {name: open(log_dir / f"{name}.log", "wb") for name in [*crates, REFERENCE, TRACED, REFUSAL]}
    sink = OtlpSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    emulator = Emulator(endpoint, args.port, state_dir=None)
    try:
        info = deploy(args, emulator, SUITE_OVERRIDES)
        try:
            e2e = e2e_figures(info, args, endpoint)
        except (MeasureError, subprocess.TimeoutExpired) as error:
            failures.append(str(error))
            e2e = []
        ids = local_stack.physical_ids(args.stack, endpoint)
        names = {crate: ids[logical] for logical, crate in logical_crates.items()}
        pause_event_sources(set(names.values()), endpoint)
        bootstraps = bootstraps_of(names, binaries, endpoint)
        untraced = bootstraps["orders-create"]
        bootstraps[TRACED] = Bootstrap(TRACED, untraced.binary, {**untraced.env, "OTLP_ENDPOINT": sink.url}, untraced.arn)
        bootstraps[REFUSAL] = Bootstrap(REFUSAL, bootstraps["graphql"].binary, bootstraps["graphql"].env, bootstraps["graphql"].arn)
        tables = {var: value for var, value in bootstraps["orders-create"].env.items() if var.endswith("_TABLE")}
        shop = create_shop(api_base(endpoint, info["outputs"]["HttpApiId"]), args.admin_email, args.admin_password, tables)
        record_frame_connection(endpoint, bootstraps["ws-default"].env["CONNECTIONS_TABLE"], shop.customer.id)
        prepare_orders(shop, bootstraps, args.rounds * (args.warm + 1), logs)
        sources = events(shop)
        contenders = {name: Contender(bootstraps[name], sources[name]) for name in bootstraps}
        sample_of = {REFERENCE: "products-get", TRACED: "orders-create", REFUSAL: "graphql.hostile"}
        requests = {name: describe(json.loads(sample(sample_of.get(name, name)))) for name in contenders}
        log(f"measuring {len(crates)} functions and the reference, {args.rounds} rounds of {args.warm + 1} calls each")
        figures = measure([contenders[name] for name in [*crates, TRACED, REFUSAL]], contenders[REFERENCE], args.rounds, args.warm, logs)
        if figures[TRACED].runs and sink.exports == 0:
            failures.append(f"{TRACED}: no span export reached the sink, so exporting was not measured")
        failures += [f"{name}: {error}" for name, result in figures.items() for error in result.errors]
        cache = {}
        for seconds in (30, 0):
            try:
                cache[seconds] = count_catalogue_requests(bootstraps["products-get"], shop, endpoint, seconds, logs["products-get"])
            except MeasureError as error:
                failures.append(f"catalogue cache {seconds} s: {error}")
        missed = print_report(figures, requests, zips, cache, e2e, args, sink.exports)
    except MeasureError as error:
        print(f"  Measuring FAILED: {error}")
        return 1
    finally:
        for handle in logs.values():
            handle.close()
        emulator.stop()
    print(f"\n  {missed} budget(s) missed. Function logs: {log_dir.relative_to(ROOT)}/")
    if failures:
        print(f"  Measuring FAILED for {len(failures)} figure(s):")
        for failure in failures:
            print(f"    {failure[:300]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
