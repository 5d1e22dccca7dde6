"""The official mParticle Web SDK, in Debian's headless Chromium, sending to s3forward (issue 13).

A page served from one loopback port (its own origin) loads the pinned ``@mparticle/web-sdk``
from npm (tests/web/websdk.py; never a CDN) and initialises it with every endpoint pointed at
``s3forward serve`` on another port. The service writes to a ``localdir`` bucket. Every other
host name is unresolvable in the browser, so nothing can leave 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websdk
from servicekit import API_SECRET, ServiceProcess, loopback_listener, port_of, wait_for

from s3forward.api.identity import MpidIssuer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
SITE_KEY, TIGHT_KEY = "site-web-key", "tight-web-key"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package"),
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title><link rel="icon" href="data:,"></head>
<body>
<script>
window.state = {mpid: null, loginMpid: null, identifyStatus: null};
window.mParticle = {config: Object.assign(%(config)s, {
  identityCallback: function (result) {
    window.state.identifyStatus = result.httpCode;
    var user = result.getUser();
    window.state.mpid = user ? user.getMPID() : null;
  }
})};
</script>
<script src="/mparticle.js"></script>
<script>mParticle.init(%(key)s, window.mParticle.config);</script>
</body></html>
"""


def _config(s3forward: str, *, per_url: bool) -> dict[str, Any]:
    base: dict[str, Any] = {
        "isDevelopmentMode": False,
        "requestConfig": False,
        "forceHttps": False,
        "workspaceToken": "E2E",
        "appName": "shop",
        "appVersion": "1.0.0",
        "flags": {"eventBatchingIntervalMillis": "1000"},
    }
    if per_url:
        # Every URL option, so nothing would go to mParticle (alias and config stay https and
        # are not used here).
        base.update(
            v3SecureServiceUrl=f"{s3forward}/v3/JS/",
            v2SecureServiceUrl=f"{s3forward}/v2/JS/",
            v1SecureServiceUrl=f"{s3forward}/v1/JS/",
            identityUrl=f"{s3forward}/v1/",
            aliasUrl=f"{s3forward}/v1/identity/",
            configUrl=f"{s3forward}/JS/v2/",
        )
    else:
        base["domain"] = s3forward  # the CNAME layout: /webevents/..., /identity/v1/...
    return base


class PageServer:
    """Static pages on their own loopback port (so their origin differs from s3forward's)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self, name: str, key: str, config: dict[str, Any]) -> str:
        html = PAGE % {"config": orjson.dumps(config).decode(), "key": orjson.dumps(key).decode()}
        (self.root / name).write_text(html)
        return f"{self.origin}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def sdk_script() -> Path:
    try:
        return websdk.ensure()
    except websdk.SdkUnavailable as exc:
        pytest.skip(f"the pinned {websdk.PACKAGE}@{websdk.VERSION} is unavailable: {exc}")


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory, sdk_script: Path) -> Iterator[PageServer]:
    root = tmp_path_factory.mktemp("pages")
    (root / "mparticle.js").write_bytes(sdk_script.read_bytes())
    (root / "left.html").write_text(
        '<!doctype html><title>left</title><link rel="icon" href="data:,">'
    )
    server = PageServer(root)
    yield server
    server.close()


@pytest.fixture(scope="module")
def outsider(tmp_path_factory: pytest.TempPathFactory, sdk_script: Path) -> Iterator[PageServer]:
    """A second page origin that no input allows."""
    root = tmp_path_factory.mktemp("outsider")
    (root / "mparticle.js").write_bytes(sdk_script.read_bytes())
    server = PageServer(root)
    yield server
    server.close()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, pages: PageServer
) -> Iterator[ServiceProcess]:
    """s3forward with two web inputs: ``site`` (default limits; only MPIDs it issued) and
    ``tight`` (2 requests per device, then one every 3 s), both allowing only the page server's
    origin."""
    workdir = tmp_path_factory.mktemp("service")
    listener = loopback_listener()
    text = f"""
[server]
listen = "127.0.0.1:{port_of(listener)}"

[spool]
path = "{workdir / "spool.db"}"

[inputs.site]
kind = "web"
api_key = "{SITE_KEY}"
app_name = "Site"
allowed_origins = ["{pages.origin}"]
identity_key = "${{S3F_TEST_SECRET}}"
require_issued_mpid = true

[inputs.tight]
kind = "web"
api_key = "{TIGHT_KEY}"
app_name = "Tight"
allowed_origins = ["{pages.origin}"]
identity_key = "${{S3F_TEST_SECRET}}"
per_device_burst = 2
per_device_requests_per_minute = 20

[connections.files]
inputs = ["site", "tight"]
destination = "localdir"
local_path = "{workdir / "bucket"}"
store_data_in_folders_by_date = "none"
batch_window = "0.5s"
"""
    process = ServiceProcess(workdir, text, listener)
    process.start()
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class Watched:
    """A fresh browser context and page, with every console error, failure and answer kept."""

    def __init__(self, browser: Any, s3forward_port: int) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.answers: list[tuple[str, str, int]] = []
        self.kinds: list[tuple[str, str]] = []
        self.inflight = 0
        mark = f"127.0.0.1:{s3forward_port}/"
        self.page.on("request", lambda r: self._count(r, 1))
        self.page.on("requestfinished", lambda r: self._count(r, -1))
        self.page.on("requestfailed", lambda r: self._count(r, -1))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "requestfailed",
            lambda r: self.failed.append(f"{r.resource_type} {r.method} {r.url} {r.failure}"),
        )
        self.page.on(
            "response",
            lambda r: (
                self.answers.append((r.request.method, r.url, r.status)) if mark in r.url else None
            ),
        )
        self.context.on(
            "request",
            lambda r: self.kinds.append((r.resource_type, r.url)) if mark in r.url else None,
        )

    def _count(self, request: Any, step: int) -> None:
        if request.resource_type in ("fetch", "xhr"):
            self.inflight += step

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until no fetch of the page is in flight (leaving now would abort it)."""
        deadline = time.monotonic() + timeout
        while self.inflight > 0:
            assert time.monotonic() < deadline, "the page's requests did not finish"
            self.page.wait_for_timeout(50)  # lets Playwright deliver the page's events

    def close(self) -> None:
        self.context.close()


def bucket_batches(service: ServiceProcess, app_name: str) -> list[dict[str, Any]]:
    root = service.workdir / "bucket"
    batches: list[dict[str, Any]] = []
    for path in sorted(root.rglob(f"{app_name}_*.txt")):
        batches.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
    return batches


def event_label(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    kind = event["event_type"]
    if kind == "custom_event":
        return f"custom:{data['event_name']}"
    if kind == "screen_view":
        return f"screen:{data['screen_name']}"
    if kind == "commerce_event":
        if data.get("product_action"):
            action = data["product_action"]
            return f"product:{action['action']}:{action.get('transaction_id')}"
        if data.get("promotion_action"):
            return f"promotion:{data['promotion_action']['action']}"
    return kind


def labelled(batches: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, mpid) of every event in the bucket."""
    return [(event_label(e), str(b["mpid"])) for b in batches for e in b.get("events", [])]


def metric(service: ServiceProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{service.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


LOG_BEFORE_LOGIN = """() => {
  mParticle.logPageView('Home', {page: '/index.html'});
  mParticle.logEvent('Signup clicked', mParticle.EventType.Navigation, {plan: 'pro', seats: 3});
  const room = mParticle.eCommerce.createProduct('Double Room', 'HOTEL-42', 199.5, 2);
  const tx = mParticle.eCommerce.createTransactionAttributes('T-1001', 'web', 'SUMMER', 399, 0, 30);
  mParticle.eCommerce.logProductAction(
    mParticle.ProductActionType.Purchase, [room], {channel: 'web'}, null, tx);
  const promo = mParticle.eCommerce.createPromotion('PROMO-1', 'banner', 'Summer sale', 1);
  mParticle.eCommerce.logPromotion(mParticle.PromotionType.PromotionClick, promo);
}"""

LOGIN = """() => new Promise((resolve) => {
  mParticle.Identity.login(
    {userIdentities: {customerid: 'cust-123', email: 'alice@example.com'}},
    (result) => {
      window.state.loginMpid = result.getUser().getMPID();
      resolve(result.httpCode);
    });
})"""


def test_web_sdk_events_land_once_under_the_issued_mpids(
    browser: Any, pages: PageServer, service: ServiceProcess
) -> None:
    """Page view, custom event, purchase, promotion, login, upload and a beacon on leaving: each
    event is in the bucket exactly once, under the MPID s3forward issued, with no failed
    request, no refused request and no console error."""
    url = pages.page("index.html", SITE_KEY, _config(f"127.0.0.1:{service.port}", per_url=False))
    watched = Watched(browser, service.port)
    page = watched.page
    page.goto(url)
    page.wait_for_function("window.state.mpid !== null", timeout=20_000)
    anonymous = page.evaluate("window.state.mpid")
    page.evaluate(LOG_BEFORE_LOGIN)
    assert page.evaluate(LOGIN) == 200
    logged_in = page.evaluate("window.state.loginMpid")
    page.evaluate("() => mParticle.logEvent('After login', mParticle.EventType.Other)")
    page.evaluate("() => mParticle.upload()")
    watched.settle()
    # Queued, not yet uploaded (the interval is 1 s): leaving the page sends it by beacon.
    page.evaluate("() => mParticle.logEvent('Leaving', mParticle.EventType.Other)")
    page.goto(f"{pages.origin}/left.html")

    issuer = MpidIssuer(API_SECRET.encode())
    assert logged_in == str(issuer.for_identity("customerid", "cust-123"))
    assert anonymous != logged_in
    expected = [
        ("screen:Home", anonymous),
        ("custom:Signup clicked", anonymous),
        ("product:purchase:T-1001", anonymous),
        ("promotion:click", anonymous),
        ("custom:After login", logged_in),
        ("custom:Leaving", logged_in),
    ]

    def all_landed() -> bool:
        found = labelled(bucket_batches(service, "Site"))
        return all(item in found for item in expected)

    wait_for(all_landed, 60, "every event of the page in the bucket", step=0.25)
    found = labelled(bucket_batches(service, "Site"))
    for item in expected:
        assert found.count(item) == 1, f"{item} landed {found.count(item)} times"
    anonymous_device = {mpid for _, mpid in found if mpid != logged_in}
    assert anonymous_device == {anonymous}, "every other event is under the device's MPID"
    after_login = next(
        b
        for b in bucket_batches(service, "Site")
        if any(event_label(e) == "custom:After login" for e in b["events"])
    )
    assert {"identity_type": "customer_id", "identity": "cust-123"} in after_login[
        "user_identities"
    ]
    log = service.log()
    assert API_SECRET not in log, "the identity key is never logged"
    assert "alice@example.com" not in log, "identity bodies are never logged"
    watched.close()

    # A beacon outlives its page: the browser still sends it (the 'Leaving' event landed), but
    # Playwright, watching the page that is gone, may report it as aborted. Nothing else fails.
    beacon = f"ping POST http://127.0.0.1:{service.port}/webevents/v3/JS/{SITE_KEY}/events "
    assert [f for f in watched.failed if f != beacon + "net::ERR_ABORTED"] == []
    assert watched.errors == []
    assert [a for a in watched.answers if a[2] >= 300] == []
    assert ("ping", f"http://127.0.0.1:{service.port}/webevents/v3/JS/{SITE_KEY}/events") in (
        watched.kinds
    ), "leaving the page sends the last batch by sendBeacon"
    assert metric(service, "s3forward_requests_rejected_total", input="site") == 0
    assert metric(service, "s3forward_batches_deduplicated_total", input="site") == 0


def test_rate_limited_uploads_answer_429_and_the_sdk_retry_lands_them_once(
    browser: Any, pages: PageServer, service: ServiceProcess
) -> None:
    """Past two requests per device the tight input answers 429; the SDK re-sends on its next
    interval until a token is back, and each event lands once. Per-URL options this time."""
    url = pages.page("tight.html", TIGHT_KEY, _config(f"127.0.0.1:{service.port}", per_url=True))
    watched = Watched(browser, service.port)
    page = watched.page
    page.goto(url)
    page.wait_for_function("window.state.mpid !== null", timeout=20_000)
    mpid = page.evaluate("window.state.mpid")
    # identify took one token; each commerce event uploads at once.
    page.evaluate(
        """() => {
      const a = mParticle.eCommerce.createProduct('A', 'SKU-A', 1, 1);
      const ta = mParticle.eCommerce.createTransactionAttributes('T-A', 'web', null, 1, 0, 0);
      mParticle.eCommerce.logProductAction(mParticle.ProductActionType.Purchase, [a], {}, null, ta);
      const b = mParticle.eCommerce.createProduct('B', 'SKU-B', 2, 1);
      const tb = mParticle.eCommerce.createTransactionAttributes('T-B', 'web', null, 2, 0, 0);
      mParticle.eCommerce.logProductAction(mParticle.ProductActionType.Purchase, [b], {}, null, tb);
      mParticle.logEvent('After the limit', mParticle.EventType.Other);
    }"""
    )
    expected = [
        ("product:purchase:T-A", mpid),
        ("product:purchase:T-B", mpid),
        ("custom:After the limit", mpid),
    ]

    def all_landed() -> bool:
        found = labelled(bucket_batches(service, "Tight"))
        return all(item in found for item in expected)

    wait_for(all_landed, 90, "every rate-limited event in the bucket", step=0.25)
    found = labelled(bucket_batches(service, "Tight"))
    for item in expected:
        assert found.count(item) == 1, f"{item} landed {found.count(item)} times"
    watched.close()

    limited = [a for a in watched.answers if a[2] == 429]
    assert limited, "the tight input answered 429 at least once"
    assert all("/v3/JS/" in u or "/v1/" in u for _, u, _ in limited)
    assert [a for a in watched.answers if a[2] >= 300 and a[2] != 429] == []
    assert watched.failed == []
    assert metric(
        service, "s3forward_requests_rejected_total", input="tight", reason="rate_limited"
    )
    # The SDK reports each 429 on the console; nothing else may be there.
    assert all("429" in e or "Too Many" in e for e in watched.errors), watched.errors


def test_a_page_origin_outside_the_allow_list_is_refused(
    browser: Any, outsider: PageServer, service: ServiceProcess
) -> None:
    """The outsider's identify preflight is refused, the browser blocks the call, and nothing
    of that page reaches the bucket."""
    url = outsider.page("index.html", SITE_KEY, _config(f"127.0.0.1:{service.port}", per_url=False))
    before = metric(service, "s3forward_requests_rejected_total", reason="origin_not_allowed")
    watched = Watched(browser, service.port)
    page = watched.page
    page.goto(url)
    page.evaluate("() => mParticle.logEvent('From outside', mParticle.EventType.Other)")
    wait_for(
        lambda: (
            metric(service, "s3forward_requests_rejected_total", reason="origin_not_allowed")
            > before
        ),
        30,
        "the refusal counted",
        step=0.25,
    )
    page.wait_for_function("window.state.identifyStatus !== null", timeout=20_000)
    assert page.evaluate("window.state.mpid") is None
    watched.close()
    assert ("custom:From outside") not in [
        label for label, _ in labelled(bucket_batches(service, "Site"))
    ]
    assert any("CORS" in e or "Access-Control" in e for e in watched.errors), watched.errors
