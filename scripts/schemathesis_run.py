#!/usr/bin/env python3
"""openapi.yaml says what the server enforces, and schemathesis proves it (docs/api-conformance.md).

Runs schemathesis (pinned in the Makefile, venv .venv/schemathesis) against a deployed API: every phase
and every check, one worker, a bounded budget. It fails on any server error (5xx) and on any
conformance failure: a valid request (by the document) refused, an invalid one accepted, an undocumented
status, header or body. `scripts/local_stack.py e2e` runs it against the e2e stack after the cargo suite.

Who schemathesis is: a throwaway customer this script registers and logs in (one successful login).
Schemathesis never learns the admin's email, so its failed logins (random emails) cannot lock the admin
out. With --admin-email/--admin-password the script also logs the admin in once (successfully) and the
admin-only operations (ADMIN_OPERATIONS) are sent with the admin's token instead, so their bodies are
validated rather than refused with 403; every other operation runs as the customer.

The failures accepted (not the API's: the gateway's, or not expressible in OpenAPI) are ACCEPTED below,
each with its reason and nowhere else. This file is also the hooks module schemathesis loads
(SCHEMATHESIS_HOOKS=schemathesis_run): the `schemathesis` import only happens there.

Runs under any Python 3.11+ (the SAM venv's in `make test`): the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = ROOT / ".venv" / "schemathesis" / "bin" / "schemathesis"
CUSTOMER_PASSWORD = "schemathesis-customer-pw"
# Operations only an admin may call: sent with the admin's token when the script has one.
ADMIN_OPERATIONS = {"createProduct", "updateProduct", "getInventory", "adjustStock", "shipOrder"}


# ------------------------------------------------------------------------------------------------
# The accepted failures: one place, each with its reason. A failure is dropped only when its
# predicate holds; everything else fails the run.


def _problem_fields(response) -> set[str]:
    """The fields a 400 problem blames (its `errors[].field`)."""
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return set()
    return {error.get("field", "") for error in body.get("errors") or [] if isinstance(error, dict)}


def _problem_messages(response) -> list[str]:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return []
    return [error.get("message", "") for error in body.get("errors") or [] if isinstance(error, dict)]


def _is_gateway_not_found(response) -> bool:
    """API Gateway's own answer to a request no route matches: 404 {"message": "Not Found"}."""
    try:
        return response.status_code == 404 and json.loads(response.content or b"{}") == {"message": "Not Found"}
    except ValueError:
        return False


def _code(failure) -> str:
    return getattr(failure, "code", "")


def _refused_400_where_every_message(check):
    """An undocumented-status failure (ST202) whose answer is a 400 problem with at least one field
    message, every one of which passes `check`."""

    def accepted(failure, case, response) -> bool:
        messages = _problem_messages(response)
        return (
            _code(failure) == "ST202"
            and response.status_code == 400
            and bool(messages)
            and all(check(message) for message in messages)
        )

    return accepted


ACCEPTED = [
    (
        "undeclared methods answer the gateway's 404, not 405",
        "API Gateway (and MiniStack's emulation of it) routes METHOD + path: a method no route declares "
        "(TRACE, PUT on a GET route, ...) matches nothing and the gateway answers 404 Not Found before any "
        "function runs. Our functions never see the request; only the gateway could answer 405.",
        lambda failure, case, response: _code(failure) == "ST204" and _is_gateway_not_found(response),
    ),
    (
        "a generated pagination cursor is refused",
        "A cursor is signed (HMAC of the listing and its position, shared/api/src/cursor.rs): the document "
        "gives its shape, but no schema can describe which values carry a valid signature, so a value "
        "schemathesis draws from the shape is (rightly) refused with 400 naming only `cursor`.",
        lambda failure, case, response: _code(failure) == "ST202"
        and response.status_code == 400
        and _problem_fields(response) == {"cursor"},
    ),
    (
        "min_price above max_price is refused",
        "A constraint between two query parameters (min_price <= max_price): OpenAPI has no way to state "
        "it, so it is in the parameter's description; the server answers 400 naming min_price.",
        lambda failure, case, response: _code(failure) == "ST202"
        and response.status_code == 400
        and _problem_messages(response) == ["must not be greater than max_price"],
    ),
    (
        "a product on two lines of an order is refused",
        "One line per product: uniqueItems covers identical lines, but not the same product_id with two "
        "different quantities, which JSON Schema cannot state; the server answers 400 on that line.",
        _refused_400_where_every_message(lambda message: "appears on more than one line" in message),
    ),
    (
        "an integer written with a fraction (`1.0`) is refused",
        "JSON Schema's data model has one number type: 1.0 and 1 are the same integer to it, so `type: "
        "integer` cannot exclude `1.0`; the server's serde (i64) refuses a number written with a fraction "
        "with 400 naming the field (`invalid type: floating point`). See docs/api-conformance.md.",
        _refused_400_where_every_message(lambda message: message.startswith("invalid type: floating point")),
    ),
    (
        "an order naming a product that does not exist is refused",
        "State, not shape: a well-formed product id that names no product answers 400 on that line "
        "(`product <id> does not exist`); schemathesis cannot know the ids of existing products.",
        _refused_400_where_every_message(lambda message: message.endswith("does not exist")),
    ),
    (
        "an account registered anonymously is not readable by another customer",
        "By design (API: `GET /api/users/{id}` answers 404 for anyone but the owner or an admin, so ids "
        "cannot be probed): the stateful phase registers an account and reads it back with its own, "
        "different customer's token.",
        lambda failure, case, response: _code(failure) == "ST302"
        and response.status_code == 404
        and case.operation.definition.raw.get("operationId") == "getUser",
    ),
    (
        "an Idempotency-Key reused with another body answers 422",
        "State, not shape: schemathesis reuses small keys (`0`, `a`) across different bodies, and the "
        "server answers 422 (documented) because that key already placed another order for this caller.",
        lambda failure, case, response: _code(failure) == "ST202"
        and response.status_code == 422
        and case.operation.definition.raw.get("operationId") == "placeOrder",
    ),
]


def _accepted(failure, case, response) -> str | None:
    for name, _reason, predicate in ACCEPTED:
        try:
            if predicate(failure, case, response):
                return name
        except Exception:  # noqa: BLE001 - a predicate that cannot decide does not accept
            continue
    return None


def _register_hooks() -> None:
    import schemathesis  # noqa: PLC0415 - only inside the schemathesis venv

    dropped: dict[str, int] = {}

    @schemathesis.hook
    def filter_failure(context, failure, case, response):  # noqa: ARG001
        name = _accepted(failure, case, response)
        if name is None:
            return True
        dropped[name] = dropped.get(name, 0) + 1
        return False

    customer = os.environ.get("SHOP_ST_CUSTOMER_TOKEN")
    admin = os.environ.get("SHOP_ST_ADMIN_TOKEN")

    # Who each request is (schemathesis's auth checks still send theirs without it, or with a bad one):
    # the admin for the admin-only operations when the driver logged one in, else the throwaway customer.
    @schemathesis.auth(refresh_interval=None, retry_on=[])
    class ShopAuth:
        def get(self, case, ctx):  # noqa: ARG002
            if admin and case.operation.definition.raw.get("operationId") in ADMIN_OPERATIONS:
                return admin
            return customer

        def set(self, case, data, ctx):  # noqa: ARG002
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    import atexit  # noqa: PLC0415

    atexit.register(lambda: dropped and print(
        "accepted (scripts/schemathesis_run.py ACCEPTED): "
        + ", ".join(f"{name} x{count}" for name, count in sorted(dropped.items())),
        file=sys.stderr,
    ))


if __name__ != "__main__":
    _register_hooks()


# ------------------------------------------------------------------------------------------------
# The driver.


def call(method: str, url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def login(api: str, email: str, password: str) -> str:
    status, answer = call("POST", f"{api}/api/auth/login", {"email": email, "password": password})
    if status != 200:
        sys.exit(f"schemathesis: logging in {email} answered {status}: {answer}")
    return answer["access_token"]


def throwaway_customer(api: str) -> str:
    email = f"schemathesis-{uuid.uuid4().hex[:12]}@example.com"
    body = {"email": email, "password": CUSTOMER_PASSWORD, "name": "Schemathesis"}
    status, answer = call("POST", f"{api}/api/users", body)
    if status != 201:
        sys.exit(f"schemathesis: registering {email} answered {status}: {answer}")
    return login(api, email, CUSTOMER_PASSWORD)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", required=True, help="the API's base URL (local_stack.py url)")
    parser.add_argument("--schema", help="the OpenAPI document (default: the API's own /openapi.json)")
    parser.add_argument("--admin-email", help="also run the admin-only operations as this admin")
    parser.add_argument("--admin-password")
    parser.add_argument("--max-time", type=int, default=120, help="the run's time budget, seconds (default 120)")
    parser.add_argument("--max-examples", type=int, default=25, help="test cases per operation and phase")
    parser.add_argument("--seed", type=int, help="reproduce an earlier run")
    parser.add_argument("--report-dir", default=str(ROOT / ".local" / "schemathesis" / "report"))
    parser.add_argument("extra", nargs="*", help="more schemathesis options, after --")
    args = parser.parse_args()
    if not SCHEMATHESIS.exists():
        sys.exit(f"{SCHEMATHESIS} is missing: make .venv/schemathesis/.installed")
    api = args.api.rstrip("/")
    customer = throwaway_customer(api)
    env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_run", SHOP_ST_CUSTOMER_TOKEN=customer)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "scripts"), env.get("PYTHONPATH")]))
    env.pop("SHOP_ST_ADMIN_TOKEN", None)
    if args.admin_email:
        env["SHOP_ST_ADMIN_TOKEN"] = login(api, args.admin_email, args.admin_password or "")
    schema = args.schema or f"{api}/openapi.json"
    if os.path.exists(schema):
        schema = os.path.abspath(schema)
    # schemathesis keeps a cache (.schemathesis/) in its working directory: under .local/, not the tree.
    workdir = ROOT / ".local" / "schemathesis"
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(SCHEMATHESIS), "run", schema, "--url", api,
        "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
        "--workers", "1", "--max-time", str(args.max_time), "--max-examples", str(args.max_examples),
        "--request-timeout", "30", "--report", "junit", "--report-dir", args.report_dir,
        "--output-truncate", "true",
        *(["--seed", str(args.seed)] if args.seed is not None else []),
        *args.extra,
    ]
    print("schemathesis:", " ".join(command), flush=True)
    started = time.monotonic()
    status = subprocess.call(command, cwd=workdir, env=env)
    print(f"schemathesis: exit {status} after {time.monotonic() - started:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
