"""The official mParticle Web SDK from npm, pinned and checked, for the browser test.

``python tests/web/websdk.py`` (run by ``.ci/run``) fetches ``@mparticle/web-sdk`` at
``VERSION`` with ``npm pack``, checks the tarball against ``INTEGRITY`` (the registry's
sha512), and keeps ``dist/mparticle.js`` under ``.cache/web-sdk/`` (git-ignored). The test loads
that file; nothing is fetched from a CDN at run time. Without npm or the registry, ``ensure``
raises ``SdkUnavailable`` and the test skips saying so.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@mparticle/web-sdk"
VERSION = "2.68.0"
INTEGRITY = (
    "sha512-8skZUMfkMlj/BnK4a6P7nNHTd/Fp/02lWBvFWn9l7WIbEUfTsMRxjAmSquZ8tgzTdMscR/FOFAvDaTwKu+t/tQ"
    "=="
)
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "web-sdk" / VERSION
TARBALL = CACHE / f"mparticle-web-sdk-{VERSION}.tgz"
SCRIPT = CACHE / "mparticle.js"


class SdkUnavailable(RuntimeError):
    """npm or the registry cannot be reached: the browser test skips with this reason."""


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _extract(data: bytes) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        member = archive.extractfile("package/dist/mparticle.js")
        if member is None:
            raise RuntimeError(f"{PACKAGE}@{VERSION} has no dist/mparticle.js")
        script = member.read()
    SCRIPT.write_bytes(script)


def ensure() -> Path:
    """The checked ``dist/mparticle.js``, fetched once with npm; raises ``SdkUnavailable``."""
    if TARBALL.exists() and SCRIPT.exists() and _integrity(TARBALL.read_bytes()) == INTEGRITY:
        return SCRIPT
    npm = shutil.which("npm")
    if npm is None:
        raise SdkUnavailable("npm is not installed, so the pinned Web SDK cannot be fetched")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        try:
            done = subprocess.run(
                [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", scratch],
                capture_output=True,
                timeout=180,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SdkUnavailable("npm pack timed out: the npm registry is unreachable") from None
        if done.returncode != 0:
            reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise SdkUnavailable(f"npm pack {PACKAGE}@{VERSION} failed: {reason[0]}")
        filename = json.loads(done.stdout)[0]["filename"]
        data = (Path(scratch) / filename).read_bytes()
    got = _integrity(data)
    if got != INTEGRITY:
        raise RuntimeError(
            f"{PACKAGE}@{VERSION} integrity mismatch: expected {INTEGRITY}, got {got}"
        )
    TARBALL.write_bytes(data)
    _extract(data)
    return SCRIPT


if __name__ == "__main__":
    try:
        print(f"{PACKAGE}@{VERSION}: {ensure()}")
    except SdkUnavailable as exc:
        sys.exit(f"cannot fetch the Web SDK for the browser test: {exc}")
