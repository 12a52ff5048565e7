#!/usr/bin/env python3
"""Checks of the API's pages in a real browser: Debian's Chromium, headless, driven by Playwright (run
with the .venv/traces interpreter; no browser is downloaded).

  docs    GET /docs renders the shop's routes with Swagger UI, loading nothing from outside the API and
          breaking no rule of its Content-Security-Policy; the screenshot shows the routes.
"""

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
# Routes the docs page must show (docs/api.md "Routes"): one per resource.
DOCUMENTED_ROUTES = ["/health", "/api/users", "/api/auth/login", "/api/products", "/api/orders", "/api/inventory/{product_id}", "/api/notifications/history"]


def chromium(playwright):
    """A headless Chromium that reaches nothing it is not sent to."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    )


def check_docs(api: str, screenshot: Path) -> None:
    from playwright.sync_api import sync_playwright

    origin = "{0.scheme}://{0.netloc}".format(urlsplit(api))
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("response", lambda reply: reply.status >= 400 and problems.append(f"{reply.status} for {reply.url}"))
            # When a browser opens the docs page,
            response = page.goto(f"{api}/docs", wait_until="networkidle", timeout=60_000)
            assert response is not None and response.status == 200, f"/docs answered {response and response.status}"
            # then Swagger UI lists the shop's routes, read from /openapi.json,
            page.locator(".opblock-summary-path").first.wait_for(timeout=30_000)
            shown = page.locator(".opblock-summary-path").all_inner_texts()
            missing = [route for route in DOCUMENTED_ROUTES if not any(text.strip().replace("\u200b", "") == route for text in shown)]
            assert not missing, f"the docs page does not show {missing}; it shows {shown}"
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    # and everything it loaded came from the API itself, without an error or a refused resource.
    outside = [url for url in requested if not url.startswith(origin) and not url.startswith("data:")]
    assert not outside, f"the docs page loaded from outside the API: {outside}"
    assert any(url.endswith("/openapi.json") for url in requested), f"the page did not read /openapi.json: {requested}"
    assert not problems, f"the docs page logged errors: {problems}"
    print(f"docs page check passed: {len(shown)} operations shown, {len(requested)} requests, all to {origin}; screenshot {screenshot}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    docs = sub.add_parser("docs", help="the docs page in headless Chromium")
    docs.add_argument("--api", required=True, help="the API's base URL")
    docs.add_argument("--screenshot", required=True)
    args = parser.parse_args()
    try:
        check_docs(args.api.rstrip("/"), Path(args.screenshot))
    except AssertionError as failure:
        print(f"docs page check FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
