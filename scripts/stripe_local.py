#!/usr/bin/env python3
"""A local Stripe for local stacks deployed with PaymentProvider=stripe: localstripe (PyPI, pinned in the
Makefile's .venv/stripe) serves Stripe's REST API (PaymentIntents, 3-D Secure included) and sends each
event, signed as Stripe signs them, to the webhooks registered with it. No account and no network.

scripts/local_stack.py starts one beside each emulator (its port + a fixed offset) when a stack asks for
it, keeps each stack's keys in .local/<stack>.stripe.json, and registers the stack's webhook route.
On its own:

  python3 scripts/stripe_local.py serve --port 18420 [--fresh]
  python3 scripts/stripe_local.py webhook --stripe http://127.0.0.1:18420 --id shop-local \\
      --url http://127.0.0.1:4566/_aws/execute-api/<api id>/api/payments/stripe/webhook --secret whsec_...

Standard library only (local_stack.py imports it under the SAM venv); localstripe itself runs under the
stripe venv's python.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / ".local"
STRIPE_PYTHON = ROOT / ".venv" / "stripe" / "bin" / "python"

# Workaround for localstripe 1.15.10, run as `python -c LAUNCHER <state file> <port> <fresh|keep>`:
# localstripe keeps its whole store in one hard-coded file (/tmp/localstripe.pickle, read at start and
# written on every change), so two instances would overwrite each other's state. The launcher points
# the store at the instance's own file (written whole, then renamed, so a stop never leaves half of
# it) and serves localstripe's app on the loopback address only: its own start() listens on every
# interface, and its /_config routes (webhooks, flushing the store) take no key.
LAUNCHER = """
import logging, os, pickle, sys
from aiohttp import web
from localstripe import resources, server

path, port, fresh = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "fresh"

def load(store):
    try:
        with open(path, "rb") as f:
            old = pickle.load(f)
    except FileNotFoundError:
        return
    store.clear()
    store.update(old)

def dump(store):
    with open(path + ".tmp", "wb") as f:
        pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)

resources.Store.try_load_from_disk = load
resources.Store.dump_to_disk = dump
if not fresh:
    resources.store.try_load_from_disk()
access = logging.getLogger("aiohttp.access")
access.setLevel(logging.DEBUG)
access.addHandler(logging.StreamHandler())
web.run_app(server.app, host="127.0.0.1", port=port, access_log=access, print=None)
"""


def log(message: str) -> None:
    print(f"[local-stack] {message}", file=sys.stderr, flush=True)


def stripe_call(method: str, url: str, key: str | None = None, form: dict | None = None) -> int:
    """One call to the emulator: its HTTP status (0 when nothing answers)."""
    data = urllib.parse.urlencode(form or {}, doseq=True).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return 0


def answers(url: str) -> bool:
    """localstripe answers an unknown PaymentIntent with 404 (with any key) once it serves."""
    return stripe_call("GET", f"{url}/v1/payment_intents/pi_none", key="sk_test_probe") == 404


class LocalStripe:
    """localstripe on 127.0.0.1:`port` with its own state file: kept across restarts, or ignored at start
    (`fresh`, the test suites). One that already answers on the port is used as it is (a `make dev` left
    running, say); then it is not ours to stop, and `fresh` refuses it."""

    def __init__(self, port: int, state_file: Path, fresh: bool):
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        if answers(self.url):
            if fresh:
                sys.exit(f"port {port} is taken by another Stripe emulator; this run needs its own")
            log(f"using the Stripe emulator already answering at {self.url}")
            return
        if not STRIPE_PYTHON.exists():
            sys.exit(f"{STRIPE_PYTHON} is missing: run `make tools` first")
        LOCAL_DIR.mkdir(exist_ok=True)
        state_file.parent.mkdir(parents=True, exist_ok=True)
        log_path = LOCAL_DIR / f"stripe-{port}.log"
        log(f"starting the Stripe emulator (localstripe) on {self.url} (log: {log_path.relative_to(ROOT)})")
        self.process = subprocess.Popen(
            [str(STRIPE_PYTHON), "-c", LAUNCHER, str(state_file), str(port), "fresh" if fresh else "keep"],
            stdout=open(log_path, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Ctrl-C in `make dev` reaches the script, which stops this after the emulator drained.
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not answers(self.url):
            if self.process.poll() is not None:
                sys.exit(f"localstripe exited with {self.process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                self.stop()
                sys.exit(f"localstripe did not become ready; see {log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log("Stripe emulator stopped")


def register_webhook(stripe_url: str, hook_id: str, url: str, secret: str) -> None:
    """Has localstripe POST every event to `url`, signed with `secret` (Stripe-Signature). Registering
    the same id again replaces it; registrations live in localstripe's memory only, so they are made
    again after each start."""
    status = stripe_call("POST", f"{stripe_url}/_config/webhooks/{hook_id}", form={"url": url, "secret": secret})
    if status != 200:
        sys.exit(f"localstripe at {stripe_url} refused the webhook {hook_id} ({status or 'no answer'})")


def stack_keys(stack: str) -> dict[str, str]:
    """The API key and webhook signing secret of a local stack: made once, then kept in
    .local/<stack>.stripe.json, so that a restart or a redeploy keeps them (localstripe takes any key)."""
    path = LOCAL_DIR / f"{stack}.stripe.json"
    if path.exists():
        return json.loads(path.read_text())
    keys = {"secret_key": f"sk_test_local_{secrets.token_hex(12)}", "webhook_secret": f"whsec_{secrets.token_hex(24)}"}
    LOCAL_DIR.mkdir(exist_ok=True)
    path.write_text(json.dumps(keys, indent=2) + "\n")
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run localstripe on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--port", type=int, default=18420)
    serve.add_argument("--fresh", action="store_true", help="start empty (the state file is still written)")
    webhook = sub.add_parser("webhook", help="register a webhook with a running localstripe")
    webhook.add_argument("--stripe", required=True, help="localstripe's base URL")
    webhook.add_argument("--id", required=True)
    webhook.add_argument("--url", required=True)
    webhook.add_argument("--secret", required=True, help="the signing secret (whsec_...)")
    args = parser.parse_args()
    if args.command == "webhook":
        register_webhook(args.stripe, args.id, args.url, args.secret)
        log(f"Stripe webhook {args.id} -> {args.url}")
        return 0
    stripe = LocalStripe(args.port, LOCAL_DIR / f"stripe-{args.port}.pickle", args.fresh)
    if stripe.process is None:
        return 0
    print(f"  Stripe emulator: {stripe.url}  (Ctrl-C stops it)", flush=True)
    try:
        stripe.process.wait()
    except KeyboardInterrupt:
        stripe.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
