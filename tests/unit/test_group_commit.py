"""The group-commit writer: one failing operation does not take its commit's others with it."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from s3forward.clock import ManualClock
from s3forward.errors import SpoolFullError
from s3forward.pipeline.writer import GroupCommitWriter
from s3forward.spool.base import SpoolTransaction
from s3forward.spool.memory import MemorySpool


class Reloads:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def remember(request_id: str, *, then_fail: Exception | None = None) -> Any:
    """An op that writes a dedup entry, then maybe raises (after its write)."""

    def op(txn: SpoolTransaction, now: float) -> str:
        txn.remember_request("app", request_id, now)
        if then_fail is not None:
            raise then_fail
        return request_id

    return op


def known(spool: MemorySpool, *ids: str) -> set[str]:
    with spool.write("reading") as txn:
        return txn.known_requests("app", ids)


def run_in_one_commit(spool: MemorySpool, reloads: Reloads, ops: list[Any]) -> list[Future[Any]]:
    """Queue every op before the writer thread starts, so that they share one commit."""
    writer = GroupCommitWriter(spool, ManualClock(), reload=reloads, participants=[])
    futures = [writer.submit(op) for op in ops]
    writer.start()
    for future in futures:
        future.exception(timeout=10)
    assert writer.close()
    return futures


def test_a_bug_in_one_operation_fails_only_that_one_and_commits_the_others() -> None:
    spool, reloads = MemorySpool(), Reloads()
    bug = RuntimeError("a bug in one request's handling")
    futures = run_in_one_commit(
        spool, reloads, [remember("a"), remember("b", then_fail=bug), remember("c")]
    )
    assert futures[0].result() == "a" and futures[2].result() == "c"
    assert futures[1].exception() is bug
    assert known(spool, "a", "b", "c") == {"a", "c"}  # b's own write was rolled back
    assert reloads.count == 1  # the in-memory state was made to match the spool again


def test_an_expected_refusal_is_that_operations_answer_without_a_rollback() -> None:
    spool, reloads = MemorySpool(), Reloads()
    full = SpoolFullError("the spool is full", retry_after=5)

    def refuse(txn: SpoolTransaction, now: float) -> None:
        raise full

    futures = run_in_one_commit(spool, reloads, [remember("a"), refuse, remember("c")])
    assert futures[1].exception() is full
    assert futures[0].result() == "a" and futures[2].result() == "c"
    assert reloads.count == 0
    assert spool.commits == 1


def test_failures_in_every_retry_fail_the_rest_rather_than_retrying_forever() -> None:
    """As when the disk fails under every operation: two attempts, then all fail."""
    spool, reloads = MemorySpool(), Reloads()
    errors = [OSError(f"disk error {n}") for n in range(4)]
    ops = [remember(str(n), then_fail=e) for n, e in enumerate(errors)]
    futures = run_in_one_commit(spool, reloads, ops)
    assert all(isinstance(f.exception(), OSError) for f in futures)
    assert futures[0].exception() is errors[0]
    assert futures[1].exception() is errors[1]
    assert known(spool, "0", "1", "2", "3") == set()
    assert reloads.count == 2


@pytest.mark.parametrize("position", [0, 2])
def test_the_failing_operation_may_be_first_or_last(position: int) -> None:
    spool, reloads = MemorySpool(), Reloads()
    ops = [remember("x"), remember("y"), remember("z")]
    ops[position] = remember("bad", then_fail=ValueError("bad"))
    futures = run_in_one_commit(spool, reloads, ops)
    assert isinstance(futures[position].exception(), ValueError)
    good = {f.result() for i, f in enumerate(futures) if i != position}
    assert known(spool, "x", "y", "z", "bad") == good
