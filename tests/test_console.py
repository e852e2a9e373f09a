"""The router's web console (``GET /console``): its headers and bounds over HTTP, then the page in headless Chromium.

The browser tests drive Debian's ``chromium`` through playwright (never
playwright's own downloaded browsers) against a real router and a replica
that joined it; they skip, saying why, where either is missing. The router
here guards its data plane with an API key, so ``/registry`` needs a
credential and the page must use the admin token it was given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from processes import Router
from router_http import admin_headers, member_headers

from anyserve.config import load_settings
from anyserve.credentials import Credentials
from anyserve_router.console.routes import CONTENT_SECURITY_POLICY, ROLES

API_KEY = "sk-console-tests-0123456789"
BODY = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]}
CHROMIUM = os.environ.get("ANYSERVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 30_000


def admin_token() -> str:
    token = Credentials.load(load_settings()).admin
    assert token
    return token


@pytest.fixture
def cluster(start_router, start_replica) -> Iterator[Router]:
    """A router whose data plane needs an API key, and an echo replica that registered itself."""
    router = start_router(ANYSERVE_API_KEYS=API_KEY)
    replica = start_replica(
        "echo_app:app", "--api-server", router.url, "--replica-id", "console-echo", transport="inproc"
    )
    with httpx.Client(base_url=router.url, timeout=30, headers=admin_headers()) as http:
        deadline = time.monotonic() + 60
        while not http.get("/registry").json()["replicas"]:
            assert time.monotonic() < deadline, "the replica never registered:\n" + replica.process.output()
            time.sleep(0.05)
    yield router


# -- over HTTP -------------------------------------------------------------------------------------------


def test_console_files_are_served_get_only_with_strict_headers(start_router):
    router = start_router()
    with httpx.Client(base_url=router.url, timeout=30) as http:
        for path, kind in (
            ("/console", "text/html"),
            ("/console/console.js", "text/javascript"),
            ("/console/console.css", "text/css"),
        ):
            page = http.get(path)  # no credential: the files carry no data
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith(kind + ";")
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert page.headers["content-security-policy"].startswith("default-src 'self';")
            assert page.headers["cache-control"] == "no-cache"
            assert page.headers["x-content-type-options"] == "nosniff"
            again = http.get(path, headers={"If-None-Match": page.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
            assert http.post(path, content=b"x" * 1000).status_code == 405
            assert http.delete(path).status_code == 405
        html = http.get("/console").text
        # the metric names come from anyserve.metric_names, written into the page at import
        for name in ROLES.values():
            assert f'"{name}"' in html
        assert "{{" not in html and "http://" not in html and "https://" not in html  # nothing from elsewhere
        assert http.get("/console/other").status_code == 404
        assert http.get("/console/../registry").status_code in (200, 404)  # normalised by the client, never a file


def test_registry_takes_the_admin_token_where_api_keys_guard_it(start_router):
    router = start_router(ANYSERVE_API_KEYS=API_KEY)
    with httpx.Client(base_url=router.url, timeout=30) as http:
        assert http.get("/registry").status_code == 401
        assert http.get("/registry", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        assert http.get("/registry", headers=admin_headers()).status_code == 200
        assert http.get("/console").status_code == 200  # the page itself stays open


def test_cli_prints_the_console_url_with_the_admin_token_in_its_fragment():
    url = "http://127.0.0.1:1"
    done = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "console", "--router", url + "/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == f"{url}/console#token={admin_token()}"
    env = {**os.environ, "ANYSERVE_ROUTER_URL": "http://127.0.0.1:2"}
    done = subprocess.run(
        [sys.executable, "-m", "anyserve_cli", "console"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.stdout.startswith("http://127.0.0.1:2/console#token=")


# -- in a real browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the console's browser tests need playwright (pip install -r requirements-dev.txt)",
    )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"the console's browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Page:
    """A browser tab that records every console error and uncaught exception of the page."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.failed_loads: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        # Chromium reports every non-2xx fetch as a console error; tests that ask for one list them apart.
        if message.text.startswith("Failed to load resource"):
            self.failed_loads.append(message.text)
        else:
            self.errors.append(message.text)

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"the console never showed {what}"
            self.page.wait_for_timeout(200)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(chromium) -> Iterator[Page]:
    page = Page(chromium)
    yield page
    page.close()


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def test_console_shows_replicas_and_counts_requests_as_they_pass(cluster, tab):
    token = admin_token()
    tab.page.goto(f"{cluster.url}/console#token={token}")
    tab.page.wait_for_selector("#replicas td.mono", timeout=WAIT_MS)
    # the token moved out of the address bar into this tab's storage
    assert "token" not in tab.page.url
    assert tab.page.evaluate("sessionStorage.getItem('anyserve.console.token')") == token
    assert tab.page.is_hidden("#login")
    replicas = tab.text("#replicas")
    assert "console-echo" in replicas and "type=echo" in replicas and "healthy" in replicas

    metrics = httpx.get(f"{cluster.url}/metrics", headers=admin_headers(), timeout=30)
    if metrics.status_code == 404:
        tab.wait_until(lambda: "metrics unavailable" in tab.text("#metrics-note"), '"metrics unavailable"')
        assert not tab.errors, tab.errors
        pytest.skip("this router serves no /metrics yet: request counts cannot be shown")
    assert metrics.status_code == 200
    tab.wait_until(lambda: number(tab.text("#total")) is not None, "a request count")
    before = number(tab.text("#total"))
    assert before is not None

    sent = 25
    with httpx.Client(base_url=cluster.url, timeout=30, headers={"X-Api-Key": API_KEY}) as http:
        for _ in range(sent):
            assert http.post("/infer", json=BODY, headers={"X-Capability-Type": "echo"}).status_code == 200
        for _ in range(3):
            assert http.post("/infer", json=BODY, headers={"X-Capability-Type": "boom"}).status_code >= 500
        stream = {"inputs": [], "parameters": {}}
        with http.stream("POST", "/infer/stream", json=stream, headers={"X-Capability-Type": "chat"}) as answer:
            assert answer.status_code == 200
            answer.read()
    sent += 1
    tab.wait_until(lambda: (number(tab.text("#total")) or 0) >= before + sent + 3, f"{sent + 3} more requests")
    tab.wait_until(lambda: tab.text("#ttft").endswith(" ms") or tab.text("#ttft").endswith(" s"), "a TTFT")
    tab.wait_until(lambda: (number(tab.text("#rate")) or 0) > 0, "a request rate above 0")
    tab.wait_until(lambda: "type=boom" in tab.text("#error-rows"), "the failed requests among recent errors")
    capabilities = tab.text("#capabilities")
    assert "type=echo" in capabilities
    assert number(tab.text("#errors")) == 3
    assert not tab.failed_loads, tab.failed_loads
    assert not tab.errors, tab.errors


def test_without_a_token_the_console_asks_for_one_and_missing_metrics_do_not_break_it(cluster, tab):
    # /metrics answered 404, as by a router that has none: the rest of the page works on
    tab.page.route("**/metrics", lambda route: route.fulfill(status=404, body="not found"))
    tab.page.goto(f"{cluster.url}/console")
    tab.page.wait_for_selector("#login", state="visible", timeout=WAIT_MS)
    tab.wait_until(lambda: "refused" in tab.text("#status"), "that /registry refused it")
    assert "console-echo" not in tab.text("#replicas")

    tab.page.fill("#token", "a-wrong-token")
    tab.page.click("#login-form button")
    tab.wait_until(lambda: "refused the token" in tab.text("#status"), "that the wrong token was refused")

    tab.page.fill("#token", admin_token())
    tab.page.click("#login-form button")
    tab.page.wait_for_selector("#login", state="hidden", timeout=WAIT_MS)
    tab.wait_until(lambda: "console-echo" in tab.text("#replicas"), "the replica")
    tab.wait_until(lambda: "metrics unavailable" in tab.text("#metrics-note"), '"metrics unavailable"')
    assert number(tab.text("#total")) is None  # a dash, no count
    tab.page.wait_for_timeout(2500)  # one more poll: still working
    assert "updated" in tab.text("#status")
    assert all("401" in text or "404" in text for text in tab.failed_loads), tab.failed_loads
    assert not tab.errors, tab.errors


def test_names_from_replicas_are_shown_as_text_never_as_markup(start_router, tab, http_to):
    router = start_router()
    hostile = '<img src=x onerror="window.pwned=1">'
    http = http_to(router.url)
    body = {"replica_id": "evil", "endpoint": "127.0.0.1:9", "capabilities": [{"type": hostile}]}
    assert http.post("/register", json=body, headers=member_headers()).status_code == 200
    tab.page.goto(f"{router.url}/console#token={admin_token()}")
    tab.wait_until(lambda: hostile in tab.text("#replicas"), "the capability as text")
    assert tab.page.evaluate("window.pwned") is None
    assert tab.page.query_selector("#replicas img") is None
    assert not tab.errors, tab.errors


def test_cli_open_hands_the_url_to_the_browser(tmp_path):
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o700)
    env = {**os.environ, "BROWSER": str(browser)}
    cmd = [sys.executable, "-m", "anyserve_cli", "console", "--router", "http://127.0.0.1:3", "--open"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=True)
    assert opened.read_text() == done.stdout.strip() == f"http://127.0.0.1:3/console#token={admin_token()}"


def test_with_auth_off_the_console_needs_no_token(start_router, tab, http_to):
    router = start_router(ANYSERVE_CLUSTER_AUTH="off")
    body = {"replica_id": "open-replica", "endpoint": "127.0.0.1:9", "capabilities": [{"type": "echo"}]}
    assert http_to(router.url).post("/register", json=body, headers=member_headers()).status_code == 200
    tab.page.goto(f"{router.url}/console")
    tab.wait_until(lambda: "open-replica" in tab.text("#replicas"), "the replica")
    tab.wait_until(lambda: number(tab.text("#total")) is not None, "a request count")
    assert tab.page.is_hidden("#login")
    assert not tab.failed_loads, tab.failed_loads
    assert not tab.errors, tab.errors
