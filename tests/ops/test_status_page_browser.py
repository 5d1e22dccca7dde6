"""The status page in a real headless Chromium (Debian's package, driven by Playwright).

Set S3F_STATUS_SCREENSHOT=1 to also refresh docs/status-page.png; the test then sends traffic
for about a minute first so that the charts have something to show.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servicekit import ServiceProcess, wait_for

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
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"
MISSING_BUCKET = "mp-forwarding-archive-gone"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package"),
]


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium from /usr/bin/chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _two_connections(moto_server: str) -> str:
    """[connections.s3] as servicekit writes it, plus one to a bucket that does not exist."""
    return f"""send_screen_views = false

[connections.archive]
inputs = ["app"]
s3_bucket_name = "{MISSING_BUCKET}"
endpoint_url = "{moto_server}"
force_path_style = true
access_key_id = "testing"
secret_access_key = "testing"
store_data_in_folders_by_date = "upload_time"
use_compression = true
batch_window = "0.5s"
"""


def _send(service: ServiceProcess, make_batch: Callable[..., dict[str, Any]], wave: int) -> None:
    for seq in range(6):
        status, _, _ = service.post("/v2/events", make_batch(seq % 3, wave * 100 + seq, events=4))
        assert status == 202


def _settled(service: ServiceProcess, scrape: Callable[[ServiceProcess], Any]) -> Any:
    def done() -> bool:
        m = scrape(service)
        return (
            m.value("s3forward_windows_open") == 0
            and m.value("s3forward_files_delivered_total", connection="s3")
            == m.value("s3forward_files_sealed_total", connection="s3")
            and m.value("s3forward_file_uploads_failed_total", connection="archive") >= 1
            and m.value("s3forward_spool_files", state="sealed_windows") == 0
            # Gauges refresh every 2 s: wait until they show every archive file waiting.
            and m.value("s3forward_spool_files", state="pending")
            == m.value("s3forward_files_sealed_total", connection="archive")
            > 0
        )

    wait_for(done, 30, "s3 delivered and archive failing", step=0.3)
    return scrape(service)


def _number(page: Any, selector: str) -> float:
    return float(page.locator(selector).first.get_attribute("data-value"))


def test_status_page_renders_failures_and_matches_metrics(
    start_service: Callable[..., ServiceProcess],
    scrape: Callable[[ServiceProcess], Any],
    make_batch: Callable[..., dict[str, Any]],
    moto_server: str,
    browser: Any,
    tmp_path: Path,
) -> None:
    """No console errors; the failing connection is shown failing with its message; the
    numbers on the page are those of /metrics; it fits a phone's width."""
    service = start_service(connection=_two_connections(moto_server))
    screenshot = os.environ.get("S3F_STATUS_SCREENSHOT") == "1"
    for wave in range(8 if screenshot else 1):
        _send(service, make_batch, wave)
        if screenshot:
            time.sleep(9)  # the history samples every 10 s: one wave per chart point
    m = _settled(service, scrape)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(service.url + "/")
    page.wait_for_selector("body[data-loaded=true]", timeout=10_000)

    archive = page.locator("article[data-connection=archive]")
    assert "failing" in (archive.get_attribute("class") or "")
    assert archive.locator(".pill").inner_text().lower() == "failing"
    message = archive.locator(".message").inner_text()
    assert f"bucket {MISSING_BUCKET} does not exist" in message
    healthy = page.locator("article[data-connection=s3]")
    assert healthy.locator(".pill").inner_text().lower() == "healthy"
    assert page.locator("#ready").inner_text() == "Not ready"

    assert _number(page, "#t-events") == m.value("s3forward_events_received_total")
    assert _number(page, "#t-delivered") == m.value("s3forward_files_delivered_total")
    assert _number(page, "#t-waiting") == m.value("s3forward_spool_files", state="pending")
    for name in ("s3", "archive"):
        card = page.locator(f"article[data-connection={name}]")
        shown = card.locator("dd[data-metric=files_delivered]").inner_text().replace(",", "")
        assert float(shown) == m.value("s3forward_files_delivered_total", connection=name)
    batches = page.locator("#inputs td[data-metric=batches_received]").first.inner_text()
    assert float(batches.replace(",", "")) == m.value("s3forward_batches_received_total")
    assert page.locator("#recent tr td.key").count() == min(
        20, int(m.value("s3forward_files_delivered_total"))
    )
    assert page.locator("#waiting tr td.key").count() == min(
        20, int(m.value("s3forward_spool_files", state="pending"))
    )
    page.screenshot(path=str(SCREENSHOT if screenshot else tmp_path / "status.png"), full_page=True)
    assert problems == []

    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(service.url + "/")
    phone.wait_for_selector("body[data-loaded=true]", timeout=10_000)
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "the page must not scroll sideways on a phone"


def test_status_page_shows_what_a_removed_connection_left_in_the_spool(
    start_service: Callable[..., ServiceProcess],
    scrape: Callable[[ServiceProcess], Any],
    make_batch: Callable[..., dict[str, Any]],
    moto_server: str,
    browser: Any,
) -> None:
    """archive's undelivered files stay when it is removed; the page names them, not
    configured, with the command that lets them go."""
    service = start_service(connection=_two_connections(moto_server))
    _send(service, make_batch, 0)
    m = _settled(service, scrape)
    waiting = int(m.value("s3forward_files_sealed_total", connection="archive"))
    service.terminate()
    text = service.config_path.read_text()
    service.config_path.write_text(text[: text.index("[connections.archive]")])
    service.start()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(service.url + "/")
    page.wait_for_selector("body[data-loaded=true]", timeout=10_000)
    gone = page.locator("article[data-connection=archive]")
    assert gone.locator(".pill").inner_text().lower() == "not configured"
    assert "s3forward spool discard --connection archive" in gone.locator(".message").inner_text()
    assert gone.locator("dd").first.inner_text() == str(waiting)
    assert problems == []
