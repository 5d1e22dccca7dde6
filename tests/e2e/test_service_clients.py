"""Issue 11: the README's clients against a running service, and alias requests end to end.

- The README's Python snippet is run as written (only the host and credentials swapped), so it
  cannot drift into code that raises.
- mParticle's Node SDK (npm ``mparticle``, installed into ``.venv/node-sdk``) posts a batch.
- An alias request posted to ``/v1/identity/alias`` lands in the bucket when the connection sends
  alias requests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from servicekit import API_KEY, API_SECRET, ServiceProcess, bucket_lines, wait_for

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
NODE_SDK_DIR = ROOT / ".venv" / "node-sdk"
NODE_SDK = "mparticle@1.0.8"
NPM_TIMEOUT = 300


def readme_python_snippet() -> str:
    """The README's first Python block (the one showing the official SDK)."""
    match = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert match is not None, "README.md has no ```python block"
    return match.group(1)


def test_the_readme_python_snippet_runs_and_its_batch_lands(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """The snippet, run as written against the service, gets a 202 and its event lands."""
    service = start_service()
    code = readme_python_snippet()
    assert 'config.host = "http://127.0.0.1:8080/v2"' in code
    code = (
        code.replace("http://127.0.0.1:8080", service.url)
        .replace('"dev-key"', repr(API_KEY))
        .replace('"dev-secret"', repr(API_SECRET))
    )
    exec(compile(code, "README.md python snippet", "exec"), {})
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[1]) == 1, 20, "the snippet's batch")
    [line] = bucket_lines(s3_client, bucket)[1]
    assert [e["data"]["event_name"] for e in line["events"]] == ["hello"]
    assert line["user_identities"] == [{"identity_type": "customer_id", "identity": "customer-1"}]


def test_an_alias_request_lands_when_the_connection_sends_them(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """POST /v1/identity/alias -> 202 -> one alias line in the bucket."""
    service = start_service(connection="send_alias_requests = true")
    body = {
        "request_type": "alias",
        "request_id": "r-9",
        "environment": "production",
        "data": {"source_mpid": 11, "destination_mpid": 22},
    }
    response = requests.post(
        f"{service.url}/v1/identity/alias",
        data=orjson.dumps(body),
        auth=(API_KEY, API_SECRET),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[1]) == 1, 20, "the alias line")
    [line] = bucket_lines(s3_client, bucket)[1]
    assert line["message_type"] == "alias"
    assert line["data"] == {"source_mpid": 11, "destination_mpid": 22}


# ------------------------------------------------------------------------------ the Node SDK


def _npm_registry_reachable(npm: str) -> bool:
    try:
        done = subprocess.run([npm, "ping"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    """The npm ``mparticle`` package in ``.venv/node-sdk`` (git-ignored), installed once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm are not installed, so the Node SDK cannot run here")
    package = NODE_SDK_DIR / "node_modules" / "mparticle"
    if not (package / "package.json").exists():
        if not _npm_registry_reachable(npm):
            pytest.skip("npm cannot reach its registry, so the Node SDK cannot be installed")
        NODE_SDK_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error", NODE_SDK],
            cwd=NODE_SDK_DIR,
            check=True,
            timeout=NPM_TIMEOUT,
            capture_output=True,
        )
    return package


NODE_SCRIPT = """
const mParticle = require(process.argv[2]);
const api = new mParticle.EventsApi(new mParticle.Configuration(process.argv[4], process.argv[5]));
api.apiClient.basePath = process.argv[3];  // the README's one-line host setting

const batch = new mParticle.Batch(mParticle.Batch.Environment.development);
const identities = new mParticle.UserIdentities();
identities.customerid = 'node-customer';
batch.user_identities = identities;
const event = new mParticle.AppEvent(mParticle.AppEvent.CustomEventType.navigation, 'from node');
event.session_uuid = 'node-session';
event.timestamp_unixtime_ms = 1700000000000;
batch.addEvent(event);

api.uploadEvents(batch, (error, data, response) => {
  if (error) { console.error(String(error)); process.exit(1); }
  console.log(response.status);
});
"""


def test_the_node_sdk_uploads_a_batch_that_lands(
    node_sdk: Path,
    start_service: Callable[..., ServiceProcess],
    s3_client: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    """mParticle's Node SDK, pointed at the service by basePath, gets 202; its batch lands."""
    service = start_service()
    script = tmp_path / "upload.js"
    script.write_text(NODE_SCRIPT, encoding="utf-8")
    done = subprocess.run(
        [
            shutil.which("node") or "node",
            str(script),
            str(node_sdk),
            f"{service.url}/v2",
            API_KEY,
            API_SECRET,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "202"
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[1]) == 1, 20, "the Node SDK's batch")
    [line] = bucket_lines(s3_client, bucket)[1]
    assert [e["data"]["event_name"] for e in line["events"]] == ["from node"]
    assert line["user_identities"] == [
        {"identity_type": "customer_id", "identity": "node-customer"}
    ]
