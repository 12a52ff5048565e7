#!/usr/bin/env python3
"""The load test (`make load`, `make test-load`): Locust, headless and bounded, with the scenario and the
invariant checks of loadtest/locustfile.py.

- Local (default): a private MiniStack on its own port, the stack `shop-load` deployed on it with the
  per-client limits raised (every simulated user comes from 127.0.0.1) and everything else at its
  defaults, the admin seeded; the emulator is stopped afterwards, also on failure or Ctrl-C.
- Remote: with SHOP_API_URL set, against that API; SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD are required.

Exits non-zero on any failed request (5xx, timeout, unexpected status) or violated invariant.
Runs under the project's SAM venv (.venv/sam), for boto3 and scripts/local_stack.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import local_stack
from local_stack import ROOT, Emulator, deploy, log

LOCUST = ROOT / ".venv" / "load" / "bin" / "locust"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
STACK = "shop-load"
# All the load comes from one address, so the per-client budgets (docs/api.md "Rate limits") and the
# per-IP login lock are raised; the notification cap too, since every order notifies. Everything
# else, the catalogue cache included, keeps the template's defaults.
LOAD_OVERRIDES = [
    "RateLimitRequests=1000000",
    "AuthRateLimitRequests=1000000",
    "LoginIpLockAfterFailures=1000000",
    "NotificationsPerUserPerHour=10000",
]


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def seconds(duration: str) -> int:
    """Locust's run-time syntax (`45s`, `2m`, `1h30m`, or plain seconds), for the driver's own bound."""
    total, number = 0, ""
    for char in duration.strip():
        if char.isdigit():
            number += char
        elif char in "hms" and number:
            total += int(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
        else:
            sys.exit(f"--duration {duration!r}: use e.g. 45s, 2m or 1h30m")
    return total + int(number or 0)


def run_locust(base_url: str, admin_email: str, admin_password: str, args) -> int:
    if not LOCUST.exists():
        sys.exit(f"{LOCUST} is missing: python3 -m venv .venv/load && .venv/load/bin/pip install locust==2.47.0")
    reports = ROOT / ".local" / "load"
    reports.mkdir(parents=True, exist_ok=True)
    command = [
        str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", base_url,
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", args.duration,
        # Users finish their current task when the time is up, so no answer is cut off mid-flight.
        "--stop-timeout", "30",
        "--settle-seconds", str(args.settle_seconds),
        "--csv", str(reports / "load"),
        *args.locust_args,
    ]
    env = dict(os.environ, SHOP_ADMIN_EMAIL=admin_email, SHOP_ADMIN_PASSWORD=admin_password)
    # Load, stop timeout, settling and checks, plus a margin: the run ends by itself whatever happens.
    bound = seconds(args.duration) + 30 + args.settle_seconds + 300
    log(f"locust: {args.users} users (spawn rate {args.spawn_rate}/s) for {args.duration} against {base_url}")
    # Its own session: the first Ctrl-C is forwarded (locust stops the load and still checks the
    # invariants), a second one kills it. No terminal input: locust would put the terminal in cbreak
    # mode for its w/s keys, and leave it so when killed.
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    interrupted = False
    deadline = time.monotonic() + bound
    while True:
        try:
            return_code = process.wait(timeout=max(1, deadline - time.monotonic()))
            return 130 if interrupted else return_code
        except subprocess.TimeoutExpired:
            log(f"locust still running after {bound:.0f}s; killing it")
            process.kill()
            process.wait()
            return 1
        except KeyboardInterrupt:
            if interrupted:
                log("killing locust")
                process.kill()
                process.wait()
                return 130
            interrupted = True
            log("interrupted: locust stops the load and checks the invariants (Ctrl-C again to kill it)")
            process.send_signal(signal.SIGINT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10, help="simulated customers (default 10)")
    parser.add_argument("--spawn-rate", type=float, default=5, help="users started per second (default 5)")
    parser.add_argument("--duration", default="45s", help="how long the load runs, e.g. 45s, 2m (default 45s)")
    parser.add_argument(
        "--settle-seconds", type=float, default=120,
        help="how long orders may take to settle after the load stops (default 120)",
    )
    parser.add_argument("--port", type=int, default=4580, help="the private emulator's port (local mode, default 4580)")
    parser.add_argument("locust_args", nargs="*", help="more locust options, after --")
    args = parser.parse_args()
    seconds(args.duration)

    remote = os.environ.get("SHOP_API_URL")
    if remote:
        email, password = os.environ.get("SHOP_ADMIN_EMAIL"), os.environ.get("SHOP_ADMIN_PASSWORD")
        if not email or not password:
            sys.exit("with SHOP_API_URL, SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD are required")
        status = run_locust(remote.rstrip("/"), email, password, args)
    else:
        if port_taken(args.port):
            sys.exit(f"port {args.port} is taken; the load test needs its own emulator (--port)")
        endpoint = f"http://127.0.0.1:{args.port}"
        email = os.environ.get("SHOP_ADMIN_EMAIL", local_stack.DEFAULT_ADMIN_EMAIL)
        password = os.environ.get("SHOP_ADMIN_PASSWORD", local_stack.DEFAULT_ADMIN_PASSWORD)
        emulator = Emulator(endpoint, args.port, state_dir=None)
        try:
            deploy_args = argparse.Namespace(stack=STACK, admin_email=email, admin_password=password, no_demo=True)
            info = deploy(deploy_args, emulator, LOAD_OVERRIDES)
            status = run_locust(info["api_url"], email, password, args)
        finally:
            emulator.stop()
    log({0: "load test passed", 130: "load test interrupted"}.get(status, f"load test FAILED (exit code {status})"))
    return status


if __name__ == "__main__":
    sys.exit(main())
