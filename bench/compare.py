"""Run a benchmark against an earlier revision and the working tree, interleaved, side by side.

The machine is shared and noisy, so figures measured at different times do not compare; this
runs ``bench/load.py`` (or ``bench/core.py``) alternately on the code of ``--base`` (a git
revision, exported to a temporary folder and put first on ``PYTHONPATH``) and on the current
tree, ``--rounds`` times each, and prints every figure line of both next to each other.

    .venv/bin/python bench/compare.py --base 471c56f -- --seconds 5 --devices 20000 --skip-core
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURE = re.compile(r"^(max rate|half rate|delivered|peak RSS|open windows|s3forward core)")


def export(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "src"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run(bench: str, args: list[str], pythonpath: Path | None) -> list[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{bench}.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return [line for line in out.stdout.splitlines() if FIGURE.match(line)] or [
        f"(failed: exit {out.returncode}) {out.stderr.strip()[-300:]}"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="471c56f", help="git revision to compare with")
    parser.add_argument("--bench", choices=["load", "core"], default="load")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("args", nargs="*", help="arguments for the benchmark (after --)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3forward-base-") as tmp:
        base_src = export(opts.base, Path(tmp))
        for round_ in range(1, opts.rounds + 1):
            for label, path in ((f"base {opts.base}", base_src), ("this tree", None)):
                print(f"--- round {round_}, {label}", flush=True)
                for line in run(opts.bench, opts.args, path):
                    print(f"    {line}", flush=True)


if __name__ == "__main__":
    main()
