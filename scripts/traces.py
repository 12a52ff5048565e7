#!/usr/bin/env python3
"""Local traces (README "Operating the shop"), run with the .venv/traces interpreter.

  serve   Arize Phoenix (pinned in the Makefile): receives the functions' OTLP/HTTP spans at
          http://127.0.0.1:<port>/v1/traces and shows recent traces as waterfalls at http://127.0.0.1:<port>.
  record  Phoenix behind a recording receiver, for the end-to-end check: the receiver keeps each span with
          its resource's service.name (Phoenix keeps spans, not resources) and forwards every export
          request, unchanged, to Phoenix.
  check   The end-to-end check of the observability promise (issue #12, docs/api.md "Observability"): places
          an order, then asserts one trace holds spans of orders-create, events-publisher, payments-worker
          and notifications-worker, all with the order's correlation id; that the EMF lines for
          OrdersPlaced and NotificationsSent are in the functions' log groups; and that Phoenix's page,
          opened in Debian's headless Chromium, shows that trace's waterfall with those four functions.
"""

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import local_stack  # a sibling script (stdlib only at import), on the path as this script's folder

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# The four functions one order passes through (docs/api.md "Observability").
ORDER_FUNCTIONS = ["orders-create", "events-publisher", "payments-worker", "notifications-worker"]


def log(message: str) -> None:
    print(f"[traces] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- Phoenix


class Phoenix:
    """A Phoenix server on 127.0.0.1:<port>, its spans in a SQLite file under `workdir`."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(port),
            # Its gRPC receiver is not used (the functions export OTLP/HTTP); a port beside the UI's.
            PHOENIX_GRPC_PORT=str(port + 1),
            PHOENIX_WORKING_DIR=str(workdir),
            PHOENIX_TELEMETRY_ENABLED="false",
        )
        self.log_file = (workdir / "phoenix.log").open("w")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "phoenix"), "serve"], cwd=workdir, env=env,
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Phoenix exited with {self.process.returncode}; see {workdir / 'phoenix.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Phoenix did not answer on {self.url} within 120 s")

    def stop(self) -> None:
        local_stack.stop_process_group(self.process, timeout=15)
        self.log_file.close()


# ---------------------------------------------------------------- the recording receiver


def decode_spans(body: bytes) -> list[dict]:
    """The spans of an OTLP ExportTraceServiceRequest, each with its resource's service.name."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {a["key"]: next(iter(a["value"].values()), None) for a in MessageToDict(span).get("attributes", [])}
                spans.append(
                    {
                        "service": resource.get("service.name"),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "start_unix_nano": span.start_time_unix_nano,
                        "attributes": attributes,
                    }
                )
    return spans


class Recorder(ThreadingHTTPServer):
    """POST /v1/traces: keeps the spans, forwards the request to Phoenix. GET /spans?trace_id=: the spans kept."""

    daemon_threads = True

    def __init__(self, port: int, forward_to: str):
        super().__init__(("127.0.0.1", port), RecorderHandler)
        self.forward_to = forward_to
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        # Forwarded behind the answer, so a busy Phoenix never slows the functions' exports down.
        self.outbox: queue.Queue[tuple[bytes, str]] = queue.Queue()
        threading.Thread(target=self.forward_forever, daemon=True).start()

    def forward_forever(self) -> None:
        while True:
            body, content_type = self.outbox.get()
            request = urllib.request.Request(
                f"{self.forward_to}/v1/traces", data=body, method="POST", headers={"content-type": content_type}
            )
            try:
                with urllib.request.urlopen(request, timeout=10):
                    pass
            except (urllib.error.URLError, OSError) as error:
                log(f"Phoenix did not take an export request: {error}")


class RecorderHandler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args) -> None:  # one line per export would drown the suite's output
        pass

    def do_POST(self) -> None:
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            spans = decode_spans(body)
        except Exception as error:  # a malformed export is the exporter's bug: say so, keep serving
            log(f"could not decode an export request: {error}")
            self.send_error(400)
            return
        with self.server.lock:
            self.server.spans.extend(spans)
        self.server.outbox.put((body, self.headers.get("content-type", "application/x-protobuf")))
        status = 200
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        from urllib.parse import parse_qs, urlparse

        url = urlparse(self.path)
        if url.path != "/spans":
            self.send_error(404)
            return
        query = parse_qs(url.query)
        with self.server.lock:
            spans = list(self.server.spans)
        for key in ("trace_id", "service"):
            if key in query:
                spans = [s for s in spans if s[key] == query[key][0]]
        if "correlation_id" in query:
            spans = [s for s in spans if s["attributes"].get("correlation_id") == query["correlation_id"][0]]
        body = json.dumps(spans).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def cmd_serve(args) -> int:
    phoenix = Phoenix(args.port, Path(args.dir))
    log(f"Phoenix is receiving spans at {phoenix.url}/v1/traces; traces at {phoenix.url}")
    try:
        wait_for_signal()
    finally:
        phoenix.stop()
    return 0


def cmd_record(args) -> int:
    phoenix = Phoenix(args.phoenix_port, Path(args.dir))
    recorder = Recorder(args.port, phoenix.url)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    log(f"recording spans at http://127.0.0.1:{args.port}/v1/traces, forwarded to Phoenix at {phoenix.url}")
    if args.ready_file:
        Path(args.ready_file).write_text("ready\n")
    try:
        wait_for_signal()
    finally:
        recorder.shutdown()
        phoenix.stop()
    return 0


# ---------------------------------------------------------------- the end-to-end check


def eventually(what: str, probe, timeout: float = 60.0, interval: float = 0.5):
    """probe() until it returns something truthy; fails naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not seen within {timeout:.0f} s (last: {last!r})")


def place_order(api: str, admin_email: str, admin_password: str) -> tuple[str, str, str]:
    """Given a new customer and a new product, when the customer orders it, then (order id, correlation id, token)."""
    status, _, login = local_stack.http_exchange("POST", f"{api}/api/auth/login", {"email": admin_email, "password": admin_password})
    assert status == 200, f"admin login: {status} {login}"
    admin = {"authorization": f"Bearer {login['access_token']}"}
    run = uuid.uuid4().hex[:12]
    status, _, product = local_stack.http_exchange(
        "POST", f"{api}/api/products",
        {"name": f"Traced teapot {run}", "category": "kitchen", "price": 2450, "stock_quantity": 10}, admin,
    )
    assert status == 201, f"create product: {status} {product}"
    email, password = f"traced-{run}@example.com", "traced-password-1"
    status, _, user = local_stack.http_exchange("POST", f"{api}/api/users", {"email": email, "password": password, "name": "Traced Customer"})
    assert status == 201, f"register: {status} {user}"
    status, _, login = local_stack.http_exchange("POST", f"{api}/api/auth/login", {"email": email, "password": password})
    assert status == 200, f"customer login: {status} {login}"
    token = login["access_token"]
    correlation_id = f"traced-order-{run}"
    status, headers, order = local_stack.http_exchange(
        "POST", f"{api}/api/orders", {"items": [{"product_id": product["id"], "quantity": 2}]},
        {"authorization": f"Bearer {token}", "idempotency-key": run, "x-correlation-id": correlation_id},
    )
    assert status == 201, f"place order: {status} {order}"
    echoed = headers.get("x-correlation-id")
    assert echoed == correlation_id, f"the API answered correlation id {echoed!r}, sent {correlation_id!r}"
    return order["id"], correlation_id, token


def recorded(recorder: str, **query) -> list[dict]:
    from urllib.parse import urlencode

    with urllib.request.urlopen(f"{recorder}/spans?{urlencode(query)}", timeout=10) as response:
        return json.loads(response.read())


def emf_lines(stack: str, endpoint: str, metric: str, since_ms: int) -> list[dict]:
    """EMF documents naming `metric` in the log groups of the stack's functions."""
    import emf

    functions = emf.stack_functions(local_stack.client("cloudformation", endpoint), stack)
    return emf.documents(local_stack.client("logs", endpoint), functions, since_ms, metric)


def screenshot_trace(phoenix: str, trace_id: str, path: Path) -> str:
    """Opens Phoenix's page of the trace in headless Chromium, screenshots it, returns the page's text."""
    from playwright.sync_api import sync_playwright

    from page_checks import chromium

    with sync_playwright() as playwright:
        browser = chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{phoenix}/projects", wait_until="networkidle", timeout=60_000)
            # The default project's traces, then the one trace: its span tree is the waterfall.
            projects = json.loads(urllib.request.urlopen(f"{phoenix}/v1/projects", timeout=10).read())["data"]
            project = next(p for p in projects if p["name"] == "default")
            page.goto(f"{phoenix}/projects/{project['id']}/traces/{trace_id}", wait_until="networkidle", timeout=60_000)
            for name in ORDER_FUNCTIONS:
                page.get_by_text(name, exact=False).first.wait_for(timeout=30_000)
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
            return page.inner_text("body")
        finally:
            browser.close()


def cmd_check(args) -> int:
    started_ms = int(time.time() * 1000) - 5_000
    order_id, correlation_id, token = place_order(args.api, args.admin_email, args.admin_password)
    log(f"placed order {order_id} (correlation id {correlation_id})")

    # When the order has been paid and its confirmation sent ...
    def confirmed():
        status, _, order = local_stack.http_exchange("GET", f"{args.api}/api/orders/{order_id}", headers={"authorization": f"Bearer {token}"})
        return status == 200 and order["status"] == "CONFIRMED"

    eventually(f"order {order_id} CONFIRMED", confirmed)

    def notified():
        status, _, page = local_stack.http_exchange("GET", f"{args.api}/api/notifications/history", headers={"authorization": f"Bearer {token}"})
        return status == 200 and [n for n in page.get("items", []) if n["status"] == "SENT"]

    eventually("a SENT notification", notified)

    # ... then one trace holds spans of the four functions, every one with the order's correlation id.
    def one_trace_of_four_functions():
        spans = recorded(args.recorder, correlation_id=correlation_id)
        by_trace: dict[str, set] = {}
        for span in spans:
            by_trace.setdefault(span["trace_id"], set()).add(span["service"])
        complete = [t for t, services in by_trace.items() if set(ORDER_FUNCTIONS) <= services]
        return complete or None

    traces = eventually(
        f"one trace with spans of {', '.join(ORDER_FUNCTIONS)} carrying correlation id {correlation_id}",
        lambda: one_trace_of_four_functions() or False, timeout=60,
    )
    trace_id = traces[0]
    spans = recorded(args.recorder, trace_id=trace_id)
    services = sorted({s["service"] for s in spans})
    strays = [s for s in spans if s["service"] in ORDER_FUNCTIONS and s["attributes"].get("correlation_id") != correlation_id]
    assert not strays, f"spans of trace {trace_id} without the order's correlation id: {strays[:3]}"
    roots = [s for s in spans if not s["parent_span_id"]]
    assert len(roots) == 1, f"trace {trace_id} has {len(roots)} root spans, expected one: {[r['name'] for r in roots]}"
    log(f"trace {trace_id}: {len(spans)} spans from {', '.join(services)}; root {roots[0]['name']!r}")

    # The business metrics of that order are EMF lines in the functions' log groups.
    for metric, service in (("OrdersPlaced", "orders-create"), ("NotificationsSent", "notifications-worker")):
        documents = eventually(
            f"an EMF line for {metric} from {service}",
            lambda: [d for d in emf_lines(args.stack, args.endpoint, metric, started_ms) if d.get("Service") == service],
            timeout=30, interval=1,
        )
        log(f"{metric}: {len(documents)} EMF line(s) from {service}")

    # Phoenix shows the trace as a waterfall with the four functions' spans.
    text = screenshot_trace(args.phoenix, trace_id, Path(args.screenshot))
    missing = [name for name in ORDER_FUNCTIONS if name not in text]
    assert not missing, f"Phoenix's page of trace {trace_id} does not show {missing}"
    log(f"screenshot of the waterfall: {args.screenshot}")
    print(f"observability check passed: order {order_id}, trace {trace_id}, {len(spans)} spans from {len(services)} functions")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Phoenix: OTLP/HTTP receiver and trace waterfalls")
    serve.add_argument("--port", type=int, default=6006)
    serve.add_argument("--dir", default=str(ROOT / ".local" / "traces"))
    serve.set_defaults(func=cmd_serve)
    record = sub.add_parser("record", help="Phoenix behind a receiver that keeps every span (for the check)")
    record.add_argument("--port", type=int, required=True)
    record.add_argument("--phoenix-port", type=int, required=True)
    record.add_argument("--dir", required=True)
    record.add_argument("--ready-file")
    record.set_defaults(func=cmd_record)
    check = sub.add_parser("check", help="the end-to-end observability check")
    check.add_argument("--api", required=True)
    check.add_argument("--recorder", required=True)
    check.add_argument("--phoenix", required=True)
    check.add_argument("--stack", required=True)
    check.add_argument("--endpoint", required=True)
    check.add_argument("--admin-email", required=True)
    check.add_argument("--admin-password", required=True)
    check.add_argument("--screenshot", required=True)
    check.set_defaults(func=cmd_check)
    args = parser.parse_args()
    try:
        return args.func(args)
    except AssertionError as failure:
        print(f"observability check FAILED: {failure}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
