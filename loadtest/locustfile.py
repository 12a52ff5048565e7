"""Load test of the shop API (issue #13): a mixed, weighted scenario, then the invariants it must keep.

Normally run by scripts/load_test.py (`make load`, `make test-load`). On its own, against any stack:

    SHOP_ADMIN_EMAIL=... SHOP_ADMIN_PASSWORD=... .venv/load/bin/locust -f loadtest/locustfile.py \\
        --headless --host <base URL> -u 8 -r 4 -t 30s --stop-timeout 30 --only-summary

Each simulated user registers its own account, browses and filters the catalogue, reads product pages
with If-None-Match, places orders under an Idempotency-Key (some replayed, some declined by the mock
payment provider), lists its orders and cancels some. Any 5xx, timeout, connection error or status
outside the expected set of that request fails it in the stats, and so fails the run.

The run creates a catalogue of its own (a category no one else uses), so the stock of everything it
orders is known exactly. When locust quits it checks, and sets exit code 1 on a violation:
- every order settles (CONFIRMED and paid, or CANCELLED and not charged) within --settle-seconds;
- one order per idempotency key, and each user's order listing holds exactly its keys' orders;
- stock is conserved: initial == current (admin inventory route) + quantities of orders not CANCELLED.

The users share that bookkeeping in memory: run it as one process (no --processes, --master, --worker).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from itertools import count

import requests
from gevent.pool import Pool
from locust import HttpUser, between, events, task
from locust.exception import StopUser
from locust.runners import STATE_STOPPED, LocalRunner

log = logging.getLogger("shop-load")

RUN_ID = uuid.uuid4().hex[:10]
CATEGORY = f"load-{RUN_ID}"
FINAL = ("CONFIRMED", "CANCELLED")
# (name, price in cents, initial stock). The last one is scarce on purpose: placements race for its
# last units, so "409 not enough stock" and stock that never goes below zero get exercised too.
CATALOGUE = [
    ("Load test mug", 1299, 400),
    ("Load test kettle", 4599, 300),
    ("Load test teapot", 3450, 250),
    ("Load test apron", 3200, 500),
    ("Load test chess set", 8900, 200),
    ("Load test go stones", 15900, 220),
    ("Load test tea towel", 899, 450),
    ("Load test desk lamp", 6400, 10),
]
PRICES = sorted(price for _, price, _ in CATALOGUE)


@dataclass
class Product:
    name: str
    price: int
    initial_stock: int


@dataclass
class Account:
    email: str
    password: str
    user_id: str = ""
    token: str = ""


@dataclass
class Placement:
    """One Idempotency-Key: the body sent under it and every order id any response to it carried."""

    key: str
    account: Account
    body: dict
    order_ids: set[str] = field(default_factory=set)
    # A 201 or a 409 was seen. Otherwise (a timeout, or the user stopped mid-request) the outcome is
    # unknown until the key is replayed at the end.
    answered: bool = False
    replays: int = 0

    @property
    def declined(self) -> bool:
        return self.body.get("payment_token") == "tok_decline"


class RunState:
    def __init__(self) -> None:
        self.products: dict[str, Product] = {}
        self.accounts: list[Account] = []
        self.placements: dict[str, Placement] = {}
        self.out_of_stock = 0
        self.cancels_sent = 0
        self.page_statuses: Counter[int] = Counter()
        self.report: list[str] = []
        self.logged_failures = 0
        self.user_numbers = count(1)
        self.environment = None


STATE = RunState()


# ---------------------------------------------------------------- options and plain API calls


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument(
        "--settle-seconds", type=float, default=120, env_var="SHOP_LOAD_SETTLE_SECONDS",
        help="how long the orders may take to settle after the load stops",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=15, env_var="SHOP_LOAD_REQUEST_TIMEOUT",
        help="seconds before a request counts as timed out (a failure)",
    )


def correlation_id() -> str:
    # Echoed by the server and carried in its logs: a failure printed here can be found there.
    return f"load-{RUN_ID}-{uuid.uuid4().hex[:12]}"


def problem_of(response) -> str:
    try:
        body = response.json()
        return f"{body.get('type', '?')}: {body.get('detail', '')}"
    except ValueError:
        return (response.text or "")[:200]


class Api:
    """Requests outside the load (setup and checks): not in the stats, retried when the server is briefly
    unavailable, since the checks are about the state, not about the last request's luck."""

    def __init__(self, base: str, timeout: float):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def call(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"X-Correlation-ID": correlation_id(), **kwargs.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in range(4):
            try:
                response = self.session.request(
                    method, self.base + path, headers=headers, timeout=self.timeout, **kwargs
                )
                if response.status_code < 500 and response.status_code != 429:
                    return response
                log.warning("check request %s %s answered %s (%s)", method, path, response.status_code, problem_of(response))
            except requests.RequestException as error:
                if attempt == 3:
                    raise
                log.warning("check request %s %s failed: %r", method, path, error)
            time.sleep(1 + attempt)
        return response

    def login(self, email: str, password: str) -> str:
        response = self.call("POST", "/api/auth/login", json={"email": email, "password": password})
        if response.status_code != 200:
            raise RuntimeError(f"login of {email} answered {response.status_code}: {problem_of(response)}")
        return response.json()["access_token"]


def options(environment):
    return environment.parsed_options


# ---------------------------------------------------------------- setup: a catalogue of the run's own


@events.init.add_listener
def _setup(environment, runner, **_) -> None:
    if not isinstance(runner, LocalRunner):
        sys.exit("loadtest/locustfile.py keeps its bookkeeping in one process: run it without --master/--worker/--processes")
    if not environment.host:
        sys.exit("--host (the API base URL) is required")
    email, password = os.environ.get("SHOP_ADMIN_EMAIL"), os.environ.get("SHOP_ADMIN_PASSWORD")
    if not email or not password:
        sys.exit("SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD are required (the catalogue and the stock checks need an admin)")
    STATE.environment = environment
    api = Api(environment.host, options(environment).request_timeout)
    try:
        token = api.login(email, password)
        for name, price, stock in CATALOGUE:
            body = {"name": name, "description": f"load run {RUN_ID}", "category": CATEGORY, "price": price, "stock_quantity": stock}
            created = api.call("POST", "/api/products", token, json=body)
            if created.status_code != 201:
                raise RuntimeError(f"POST /api/products answered {created.status_code}: {problem_of(created)}")
            product_id = created.json()["id"]
            # The initial stock as the authoritative route reads it, the same route the final check reads.
            inventory = api.call("GET", f"/api/inventory/{product_id}", token)
            if inventory.status_code != 200 or inventory.json()["stock_quantity"] != stock:
                raise RuntimeError(f"GET /api/inventory/{product_id} answered {inventory.status_code}: {inventory.text[:200]}")
            STATE.products[product_id] = Product(name, price, stock)
    except (requests.RequestException, RuntimeError, KeyError, ValueError) as error:
        sys.exit(f"load test setup failed: {error}")
    print(f"[load] run {RUN_ID}: {len(STATE.products)} products in category {CATEGORY}, stock {sum(p.initial_stock for p in STATE.products.values())} units", flush=True)


# ---------------------------------------------------------------- the simulated customer


class Customer(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        number = next(STATE.user_numbers)
        # SES's mailbox simulator: on AWS the welcome and order emails go nowhere and cost no reputation.
        self.account = Account(
            email=f"success+load-{RUN_ID}-{number}-{uuid.uuid4().hex[:6]}@simulator.amazonses.com",
            password=uuid.uuid4().hex,
        )
        self.etags: dict[str, str] = {}
        self.orders: list[str] = []
        registered = self.call(
            "POST", "/api/users", "POST /api/users", (201,), auth=False,
            json={"email": self.account.email, "password": self.account.password, "name": f"Load user {number}"},
            validate=lambda r: None if r.json().get("id") and "password" not in r.text else "no id, or a password in the body",
        )
        if registered is None:
            raise StopUser()
        self.account.user_id = registered.json()["id"]
        if not self.login():
            raise StopUser()
        STATE.accounts.append(self.account)

    def call(self, method, path, name, expected, *, auth=True, validate=None, headers=None, **kwargs):
        """One request of the load. It fails in the stats when its status is not in `expected` (5xx, timeouts
        and connection errors included) or when `validate` returns a complaint. Returns it if it passed."""
        headers = {"X-Correlation-ID": correlation_id(), **(headers or {})}
        if auth:
            headers["Authorization"] = f"Bearer {self.account.token}"
        timeout = options(self.environment).request_timeout
        with self.client.request(
            method, path, name=name, headers=headers, timeout=timeout, catch_response=True, **kwargs
        ) as response:
            if response.status_code in expected:
                try:
                    complaint = validate(response) if validate else None
                except (ValueError, KeyError, TypeError, AttributeError) as error:
                    complaint = f"malformed answer: {error!r}"
            elif response.status_code == 0:
                complaint = f"no answer: {type(response.error).__name__}"
            else:
                kind = problem_of(response).split(":")[0]
                complaint = f"unexpected {response.status_code} {kind}"
            if complaint is None:
                response.success()
                return response
            response.failure(complaint)
            # The first few in detail, with the correlation id to find them in the server's logs.
            if STATE.logged_failures < 25:
                STATE.logged_failures += 1
                log.warning(
                    "%s %s -> %s %s [correlation id %s] %s",
                    method, path, response.status_code, complaint, headers["X-Correlation-ID"],
                    problem_of(response) if response.status_code else response.error,
                )
            return None

    def login(self) -> bool:
        response = self.call(
            "POST", "/api/auth/login", "POST /api/auth/login", (200,), auth=False,
            json={"email": self.account.email, "password": self.account.password},
            validate=lambda r: None if r.json()["token_type"] == "Bearer" and r.json()["access_token"] else "no token",
        )
        if response is not None:
            self.account.token = response.json()["access_token"]
        return response is not None

    # ---- catalogue

    @task(6)
    def browse(self) -> None:
        params: dict[str, object] = {"limit": random.choice([3, 5, 10, 20])}
        kind = random.random()
        if kind < 0.5:
            params["category"] = CATEGORY
        if kind < 0.25 or kind >= 0.8:
            low, high = sorted(random.sample(range(PRICES[0] - 100, PRICES[-1] + 100, 50), 2))
            params.update(min_price=low, max_price=high)

        def validate(response):
            page = response.json()
            for item in page["items"]:
                if "category" in params and item["category"] != CATEGORY:
                    return "an item outside the category filter"
                if not params.get("min_price", 0) <= item["price"] <= params.get("max_price", item["price"]):
                    return "an item outside the price filter"
            if len(page["items"]) > params["limit"]:
                return "more items than the limit"
            return None

        for _ in range(3):
            response = self.call("GET", "/api/products", "GET /api/products", (200,), auth=False, params=params, validate=validate)
            cursor = response.json().get("next_cursor") if response is not None else None
            # Follow the cursor sometimes, as a customer scrolling further would.
            if not cursor or random.random() < 0.5:
                return
            params["cursor"] = cursor

    @task(8)
    def product_page(self) -> None:
        product_id = random.choice(list(STATE.products))
        etag = self.etags.get(product_id)

        def validate(response):
            if response.status_code == 304:
                if etag is None:
                    return "304 to a request without If-None-Match"
                if response.content:
                    return "304 with a body"
            elif response.json()["id"] != product_id:
                return "another product"
            if response.headers.get("ETag"):
                self.etags[product_id] = response.headers["ETag"]
            return None

        response = self.call(
            "GET", f"/api/products/{product_id}", "GET /api/products/{id}", (200, 304), auth=False,
            headers={"If-None-Match": etag} if etag else {}, validate=validate,
        )
        if response is not None:
            STATE.page_statuses[response.status_code] += 1

    # ---- accounts

    @task(1)
    def login_again(self) -> None:
        self.login()

    # ---- orders

    @task(4)
    def place_order(self) -> None:
        chosen = random.sample(list(STATE.products), k=random.randint(1, 3))
        body: dict[str, object] = {"items": [{"product_id": pid, "quantity": random.randint(1, 3)} for pid in chosen]}
        roll = random.random()
        if roll < 0.15:
            body["payment_token"] = "tok_decline"  # the saga cancels it and gives the stock back
        elif roll < 0.6:
            body["payment_token"] = "tok_visa"
        placement = Placement(key=f"load-{RUN_ID}-{uuid.uuid4().hex}", account=self.account, body=body)
        # Recorded before sending: an answer that never arrives is resolved by a replay at the end.
        STATE.placements[placement.key] = placement
        if self.send_placement(placement, "POST /api/orders") and random.random() < 0.3:
            # A client retrying after a lost answer: the same key and body must give the same order.
            self.send_placement(placement, "POST /api/orders (replay)")

    def send_placement(self, placement: Placement, name: str) -> bool:
        """Sends the placement under its key; True when it placed (or replayed) an order."""
        replay = bool(placement.order_ids)
        known = set(placement.order_ids)

        def validate(response):
            placement.answered = True
            if response.status_code == 409:
                # Not enough stock; docs/api.md "Order placement rules": the 409 names the product.
                if not any(line["product_id"] in response.text for line in placement.body["items"]):
                    return "409 that names none of the order's products"
                return None
            order = response.json()
            # Every id any answer to this key carried; more than one fails the invariant check.
            placement.order_ids.add(order["id"])
            if order["id"] not in self.orders:
                self.orders.append(order["id"])
            if replay and (response.headers.get("Idempotent-Replayed") != "true" or order["id"] not in known):
                return "replay without Idempotent-Replayed: true or with another order id"
            if not replay and response.headers.get("Idempotent-Replayed"):
                return "a first placement marked as a replay"
            if order["status"] != "PENDING" or order["user_id"] != self.account.user_id:
                return "a new order that is not PENDING or not the caller's"
            return None

        response = self.call(
            "POST", "/api/orders", name, (201,) if replay else (201, 409),
            json=placement.body, headers={"Idempotency-Key": placement.key}, validate=validate,
        )
        if response is not None and response.status_code == 409:
            STATE.out_of_stock += 1
        if replay and response is not None:
            placement.replays += 1
        return response is not None and response.status_code == 201

    @task(2)
    def list_orders(self) -> None:
        def validate(response):
            page = response.json()
            if any(item["user_id"] != self.account.user_id for item in page["items"]):
                return "someone else's order in the listing"
            return None

        self.call("GET", "/api/orders", "GET /api/orders", (200,), params={"limit": random.choice([5, 10, 20])}, validate=validate)

    @task(1)
    def cancel_order(self) -> None:
        if not self.orders:
            return
        order_id = random.choice(self.orders)
        STATE.cancels_sent += 1
        # 409 would mean SHIPPED, and nothing ships here: any 409 is a failure.
        self.call(
            "POST", f"/api/orders/{order_id}/cancel", "POST /api/orders/{id}/cancel", (200,),
            validate=lambda r: None if r.json()["status"] == "CANCELLED" and r.json()["id"] == order_id else "not CANCELLED",
        )


# ---------------------------------------------------------------- the invariants, once the load stops


class Checker:
    def __init__(self, environment):
        self.opts = options(environment)
        self.api = Api(environment.host, self.opts.request_timeout)
        self.deadline = time.monotonic() + self.opts.settle_seconds
        self.violations: list[str] = []
        self.orders: dict[str, dict] = {}  # order id -> its last read
        self.unreadable: dict[str, int] = {}  # order id -> the status its last read answered
        self.owner: dict[str, Placement] = {}
        self.held_units = 0

    def as_owner(self, account: Account, method: str, path: str, **kwargs) -> requests.Response:
        response = self.api.call(method, path, account.token, **kwargs)
        if response.status_code == 401:  # a token that expired during a long run
            account.token = self.api.login(account.email, account.password)
            response = self.api.call(method, path, account.token, **kwargs)
        return response

    def resolve_unknown_outcomes(self) -> int:
        """Keys whose answer was lost are sent again: the server answers the stored response (or, if the
        first request never reached it, places the order now), so every key ends with a known outcome."""
        unknown = [p for p in STATE.placements.values() if not p.answered]
        for placement in unknown:
            while True:
                response = self.as_owner(
                    placement.account, "POST", "/api/orders", json=placement.body, headers={"Idempotency-Key": placement.key}
                )
                in_flight = response.status_code == 409 and "still being processed" in response.text
                if not in_flight or time.monotonic() > self.deadline:
                    break
                time.sleep(1)
            if response.status_code == 201:
                placement.order_ids.add(response.json()["id"])
            elif response.status_code != 409:
                self.violations.append(f"key {placement.key}: replay answered {response.status_code} {problem_of(response)}")
        return len(unknown)

    def read_orders(self, ids) -> None:
        def read(order_id):
            response = self.as_owner(self.owner[order_id].account, "GET", f"/api/orders/{order_id}")
            return order_id, response

        for order_id, response in Pool(8).imap_unordered(read, ids):
            if response.status_code == 200:
                self.orders[order_id] = response.json()
                self.unreadable.pop(order_id, None)
            else:
                self.unreadable[order_id] = response.status_code

    @staticmethod
    def settled(order: dict) -> bool:
        # docs/api.md "Payment status and money safety": what a quiet system holds.
        return (order["status"] == "CONFIRMED" and order["payment_status"] == "paid") or (
            order["status"] == "CANCELLED" and order["payment_status"] in ("pending", "declined", "refunded")
        )

    def settle(self) -> float:
        started = time.monotonic()
        pending = set(self.owner)
        while pending:
            self.read_orders(pending)
            pending = {oid for oid in pending if oid not in self.orders or not self.settled(self.orders[oid])}
            if not pending or time.monotonic() > self.deadline:
                break
            time.sleep(1)
        for order_id in sorted(pending)[:10]:
            order = self.orders.get(order_id, {})
            self.violations.append(
                f"order {order_id} not settled after {self.opts.settle_seconds:.0f}s: "
                f"{order.get('status')}/{order.get('payment_status')}"
            )
        if len(pending) > 10:
            self.violations.append(f"... and {len(pending) - 10} more orders not settled")
        self.violations.extend(f"order {oid}: GET as its owner answered {status}" for oid, status in self.unreadable.items())
        return time.monotonic() - started

    def check_orders(self) -> None:
        """Each order holds what was sent, at the run's prices, and its payment matches its token."""
        for order_id, order in self.orders.items():
            placement = self.owner[order_id]
            sent = sorted((line["product_id"], line["quantity"]) for line in placement.body["items"])
            held = sorted((line["product_id"], line["quantity"]) for line in order["items"])
            total = sum(STATE.products[pid].price * quantity for pid, quantity in held)
            if order["user_id"] != placement.account.user_id or sent != held or order["total_amount"] != total:
                self.violations.append(f"order {order_id}: owner, lines or total differ from what was placed")
            if placement.declined and order["status"] == "CONFIRMED":
                self.violations.append(f"order {order_id}: paid with tok_decline, yet CONFIRMED")
            if not placement.declined and order.get("cancel_reason") == "payment_declined":
                self.violations.append(f"order {order_id}: cancelled as declined, but its token approves")

    def check_keys_and_listings(self) -> int:
        for placement in STATE.placements.values():
            if len(placement.order_ids) > 1:
                self.violations.append(f"key {placement.key} produced {len(placement.order_ids)} orders")
        exact = 0
        for account in STATE.accounts:
            expected = {oid for p in STATE.placements.values() if p.account is account for oid in p.order_ids}
            while True:
                listed = self.listing(account)
                # An index may lag behind a fresh write on AWS: a missing order gets until the deadline.
                if listed is None or listed >= expected or time.monotonic() > self.deadline:
                    break
                time.sleep(1)
            if listed is None:
                continue
            exact += listed == expected
            if listed - expected:
                self.violations.append(f"{account.email}: listing holds {len(listed - expected)} orders no key of it produced: {sorted(listed - expected)[:5]}")
            if expected - listed:
                self.violations.append(f"{account.email}: listing misses {len(expected - listed)} of its orders: {sorted(expected - listed)[:5]}")
        return exact

    def listing(self, account: Account) -> set[str] | None:
        ids: set[str] = set()
        params: dict[str, object] = {"limit": 100}
        while True:
            response = self.as_owner(account, "GET", "/api/orders", params=params)
            if response.status_code != 200:
                self.violations.append(f"{account.email}: GET /api/orders answered {response.status_code}")
                return None
            page = response.json()
            ids.update(item["id"] for item in page["items"])
            if not page.get("next_cursor"):
                return ids
            params["cursor"] = page["next_cursor"]

    def check_stock(self, admin_token: str) -> int:
        """initial == current + held by orders not CANCELLED, for every product of the run. Order
        states and stock are read apart, so a mismatch is re-read a few times before it counts."""
        for attempt in range(5):
            held = Counter()
            for order in self.orders.values():
                if order["status"] != "CANCELLED":
                    for line in order["items"]:
                        held[line["product_id"]] += line["quantity"]
            self.held_units = sum(held.values())
            mismatches = []
            for product_id, product in STATE.products.items():
                response = self.api.call("GET", f"/api/inventory/{product_id}", admin_token)
                if response.status_code != 200:
                    mismatches.append(f"{product.name}: GET /api/inventory answered {response.status_code}")
                    continue
                current = response.json()["stock_quantity"]
                if product.initial_stock != current + held[product_id] or current < 0:
                    mismatches.append(
                        f"{product.name} ({product_id}): initial {product.initial_stock} != current {current} + held {held[product_id]}"
                    )
            if not mismatches:
                return len(STATE.products)
            if attempt < 4:
                time.sleep(2)
                self.read_orders(list(self.owner))
        self.violations.extend(f"stock not conserved: {m}" for m in mismatches)
        return len(STATE.products) - len(mismatches)

    def run(self) -> list[str]:
        admin_token = self.api.login(os.environ["SHOP_ADMIN_EMAIL"], os.environ["SHOP_ADMIN_PASSWORD"])
        resolved = self.resolve_unknown_outcomes()
        self.owner = {oid: p for p in STATE.placements.values() for oid in p.order_ids}
        settle_time = self.settle()
        self.check_orders()
        listings = self.check_keys_and_listings()
        conserved = self.check_stock(admin_token)
        statuses = Counter(o["status"] for o in self.orders.values())
        reasons = Counter(o.get("cancel_reason") for o in self.orders.values() if o["status"] == "CANCELLED")
        keys = len(STATE.placements)
        doubled = sum(len(p.order_ids) > 1 for p in STATE.placements.values())
        pages = STATE.page_statuses
        STATE.report += [
            f"traffic: {keys} placements ({sum(p.replays for p in STATE.placements.values())} replayed, "
            f"{STATE.out_of_stock} refused for stock), {STATE.cancels_sent} cancels, "
            f"product pages {pages[200]} x 200 and {pages[304]} x 304 (If-None-Match matched)",
            f"invariants: {sum(statuses[s] for s in FINAL)} of {len(self.owner)} orders settled in {settle_time:.1f}s "
            f"({statuses['CONFIRMED']} CONFIRMED, {statuses['CANCELLED']} CANCELLED"
            + (" of which " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=str)) if reasons else "")
            + ")",
            f"invariants: {keys} idempotency keys -> {len(self.owner)} orders, {doubled} keys with more than one "
            f"({resolved} lost answers resolved by a replay); {listings} of {len(STATE.accounts)} users' listings hold exactly their orders",
            f"invariants: stock conserved on {conserved} of {len(STATE.products)} products "
            f"({self.held_units} units held by orders not CANCELLED)",
        ]
        return self.violations


@events.quitting.add_listener
def _check_invariants(environment, **_) -> None:
    if not STATE.products:
        return
    if environment.runner.state != STATE_STOPPED:
        # Quitting before the run time was up (Ctrl-C): stop the users first, so nothing moves under the checks.
        environment.runner.stop()
    print(f"[load] load stopped; checking invariants (orders may take up to {options(environment).settle_seconds:.0f}s to settle)", flush=True)
    try:
        violations = Checker(environment).run()
    except Exception:  # noqa: BLE001 - a check that cannot finish fails the run, with its reason
        violations = [f"the invariant check could not finish:\n{traceback.format_exc()}"]
    if violations:
        environment.process_exit_code = 1
        STATE.report += ["INVARIANT VIOLATED: " + v for v in violations]
    else:
        STATE.report.append("invariants: all hold")


@events.quit.add_listener
def _print_summary(exit_code, **_) -> None:
    """After locust's own tables: one compact line per request type, then the invariant report."""
    if STATE.environment is not None:
        stats = STATE.environment.stats
        total = stats.total
        print(f"\n[load] {total.num_requests} requests, {total.num_failures} failed, {total.total_rps:.1f} req/s")
        print(f"  {'request':<34} {'reqs':>6} {'fails':>6} {'req/s':>6} {'p50':>6} {'p95':>6} {'p99':>6}  (ms)")
        for entry in sorted(stats.entries.values(), key=lambda e: e.name):
            print(
                f"  {entry.name:<34} {entry.num_requests:>6} {entry.num_failures:>6} {entry.total_rps:>6.1f} "
                + " ".join(f"{entry.get_response_time_percentile(p) or 0:>6.0f}" for p in (0.5, 0.95, 0.99))
            )
    for line in STATE.report:
        print(f"[load] {line}")
    print(f"[load] exit code {exit_code}", flush=True)
