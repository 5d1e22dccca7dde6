"""Model-based test of the Spool contract: SqliteSpool and MemorySpool against a plain model.

Every rule runs the same transaction on both backends and on a reference written as plainly as
possible; after each step every read view must agree with the reference. A "crash" closes both
spools and opens them again from what was committed (SQLite: the same file; memory: the same
state), and a failed transaction must leave no trace.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from s3forward.errors import FencedError
from s3forward.spool.base import FileState, NewFile, Spool, SpoolTransaction
from s3forward.spool.codec import BodyCodec, compress_body
from s3forward.spool.memory import MemorySpool
from s3forward.spool.sqlite import SCHEMA_VERSION, SqliteSpool


@dataclass
class RefWindow:
    connection: str
    group: str
    input: str
    opened_at: float
    items: list[tuple[int, int | None, int]] = field(default_factory=list)
    sealed_at: float | None = None
    reason: str | None = None
    digits: int | None = None


@dataclass
class RefFile:
    window_id: int
    connection: str
    key: str
    body: bytes | None
    state: FileState = FileState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    delivered_at: float = 0.0


@dataclass
class Reference:
    """The spool's contract, as plainly as it can be written."""

    batches: dict[int, tuple[str, int, int, bytes, int]] = field(default_factory=dict)
    stored_sizes: dict[int, int] = field(default_factory=dict)
    """Per position: the bytes the batch takes as stored (compressed or not)."""
    windows: dict[int, RefWindow] = field(default_factory=dict)
    files: dict[int, RefFile] = field(default_factory=dict)
    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    next_position: int = 1
    next_file_id: int = 1
    max_window_id: int = 0


class Boom(Exception):
    """A failure in the middle of a transaction."""


CONNECTIONS = ("a", "b")
BODIES = st.binary(min_size=1, max_size=40)


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.sqlite: SqliteSpool = SqliteSpool.open(self.dir / "spool.db")
        self.memory = MemorySpool()
        self.ref = Reference()
        self.clock = 1000.0
        self.next_window = 1

    def teardown(self) -> None:
        self.sqlite.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def spools(self) -> tuple[Spool, Spool]:
        return self.sqlite, self.memory

    def tick(self) -> float:
        self.clock += 1.0
        return self.clock

    # ------------------------------------------------------------------ rules

    @initialize()
    def start(self) -> None:
        assert self.sqlite.schema_version() == self.memory.schema_version() == SCHEMA_VERSION

    @rule(
        connection=st.sampled_from(CONNECTIONS),
        group=st.sampled_from(["g1", "g2", "g3"]),
        bodies=st.lists(BODIES, min_size=1, max_size=3),
        request=st.one_of(st.none(), st.sampled_from(["r1", "r2", "r3"])),
    )
    def ingest(self, connection: str, group: str, bodies: list[bytes], request: str | None) -> None:
        """Open a window and add batches to it, as one request (with a dedup id). Bodies of
        even length are stored compressed (issue 10), the others as they are, and both read
        back the same. (Chosen from the body rather than drawn, so that the machine explores
        exactly the runs it explored before compression existed.)"""
        stored = [compress_body(b) if len(b) % 2 == 0 else b for b in bodies]
        codecs = [BodyCodec.ZLIB if len(b) % 2 == 0 else BodyCodec.JSON for b in bodies]
        now = self.tick()
        window_id = self.next_window
        self.next_window += 1

        def apply(txn: SpoolTransaction) -> list[int]:
            if request is not None and txn.known_requests("in", [request]):
                return []
            if request is not None:
                txn.remember_request("in", request, now)
            txn.open_window(window_id, connection, group, "in", now)
            positions = []
            for seq, (body, kept, codec) in enumerate(zip(bodies, stored, codecs, strict=True)):
                position = txn.append_batch("in", int(now * 1000), seq + 7, kept, 1, codec)
                txn.add_item(window_id, seq, position, None, len(body), now)
                positions.append(position)
            return positions

        results = [self._write(spool, apply) for spool in self.spools()]
        assert results[0] == results[1]
        ref = self.ref
        if request is not None and ("in", request) in ref.requests:
            assert results[0] == []
            return
        if request is not None:
            ref.requests[("in", request)] = now
        window = RefWindow(connection, group, "in", now)
        for body, kept in zip(bodies, stored, strict=True):
            position = ref.next_position
            ref.next_position += 1
            ref.batches[position] = ("in", int(now * 1000), len(window.items) + 7, body, 1)
            ref.stored_sizes[position] = len(kept)
            window.items.append((position, None, len(body)))
        ref.windows[window_id] = window
        ref.max_window_id = window_id
        assert results[0] == [p for p, _, _ in window.items]

    @rule(reason=st.sampled_from(["window_elapsed", "drain"]), digits=st.integers(0, 99_999))
    def seal_oldest_open(self, reason: str, digits: int) -> None:
        open_ids = sorted(w for w, win in self.ref.windows.items() if win.sealed_at is None)
        if not open_ids:
            return
        window_id = open_ids[0]
        now = self.tick()
        for spool in self.spools():
            self._write(spool, lambda txn: txn.seal_window(window_id, now, reason, digits))
            # sealing twice keeps the first seal
            self._write(spool, lambda txn: txn.seal_window(window_id, now + 5, "other", 1))
        win = self.ref.windows[window_id]
        win.sealed_at, win.reason, win.digits = now, reason, digits

    @rule(body=BODIES)
    def store_file_of_oldest_sealed(self, body: bytes) -> None:
        sealed = sorted(
            (win.sealed_at or 0.0, w) for w, win in self.ref.windows.items() if win.sealed_at
        )
        if not sealed:
            return
        window_id = sealed[0][1]
        win = self.ref.windows[window_id]
        new = NewFile(
            connection=win.connection,
            window_id=window_id,
            key=f"k{window_id}",
            body=body,
            sha256="x",
            content_type="text/plain",
            content_encoding=None,
            raw_bytes=len(body),
            batches=len(win.items),
            events=0,
            sealed_at=win.sealed_at or 0.0,
            first_received_ms=0,
        )
        results = [self._write(spool, lambda txn: txn.store_file(new)) for spool in self.spools()]
        assert results[0] == results[1]
        released = 0
        for position, _, _ in win.items:
            inp, ms, bid, b, refs = self.ref.batches[position]
            if refs - 1 <= 0:
                released += self.ref.stored_sizes.pop(position)
                del self.ref.batches[position]
            else:
                self.ref.batches[position] = (inp, ms, bid, b, refs - 1)
        del self.ref.windows[window_id]
        file_id = self.ref.next_file_id
        self.ref.next_file_id += 1
        self.ref.files[file_id] = RefFile(window_id, win.connection, f"k{window_id}", body)
        assert results[0] == (file_id, released)
        for spool in self.spools():  # exactly once per window
            with pytest.raises(ValueError, match="already has its file"):
                self._write(spool, lambda txn: txn.store_file(new))

    @rule(data=st.data())
    def deliver_fail_or_rekey(self, data: st.DataObject) -> None:
        pending = sorted(f for f, rf in self.ref.files.items() if rf.state is FileState.PENDING)
        if not pending:
            return
        file_id = data.draw(st.sampled_from(pending))
        action = data.draw(st.sampled_from(["delivered", "failed", "rekey"]))
        now = self.tick()
        rf = self.ref.files[file_id]
        if action == "delivered":
            results = [
                self._write(spool, lambda txn: txn.mark_delivered(file_id, now))
                for spool in self.spools()
            ]
            assert results == [len(rf.body or b"")] * 2
            again = [
                self._write(spool, lambda txn: txn.mark_delivered(file_id, now))
                for spool in self.spools()
            ]
            assert again == [0, 0], "marking delivered twice changes nothing"
            rf.state, rf.body, rf.delivered_at = FileState.DELIVERED, None, now
            rf.last_error = None  # delivery clears the last error
        elif action == "failed":
            for spool in self.spools():
                self._write(spool, lambda txn: txn.mark_attempt_failed(file_id, now + 30, "E: x"))
            rf.attempts += 1
            rf.next_attempt_at, rf.last_error = now + 30, "E: x"
        else:
            for spool in self.spools():
                self._write(spool, lambda txn: txn.rekey(file_id, f"new{file_id}"))
            rf.key = f"new{file_id}"

    @rule()
    def failed_transaction_leaves_no_trace(self) -> None:
        now = self.tick()
        window_id = self.next_window
        self.next_window += 1

        def apply(txn: SpoolTransaction) -> None:
            txn.remember_request("in", "lost", now)
            txn.open_window(window_id, "a", "lost", "in", now)
            position = txn.append_batch("in", 1, 1, b"lost", 1)
            txn.add_item(window_id, 0, position, None, 4, now)
            raise Boom

        for spool in self.spools():
            with pytest.raises(Boom):
                self._write(spool, apply)

    @rule()
    def crash_and_reopen(self) -> None:
        self.sqlite.close()
        self.sqlite = SqliteSpool.open(self.dir / "spool.db")
        self.memory = MemorySpool(self.memory.state)

    @rule(keep=st.integers(0, 3))
    def prune_and_forget(self, keep: int) -> None:
        for spool in self.spools():
            self._write(spool, lambda txn: txn.prune_delivered(keep))
        delivered = sorted(
            (f for f, rf in self.ref.files.items() if rf.state is FileState.DELIVERED),
            key=lambda f: self.ref.files[f].delivered_at,
            reverse=True,
        )
        for file_id in delivered[keep:]:
            del self.ref.files[file_id]

    @rule()
    def fences_refuse_a_stale_owner(self) -> None:
        for spool in self.spools():
            assert isinstance(spool, SqliteSpool | MemorySpool)
            old = spool.take_ownership()
            new = spool.take_ownership()
            assert new > old
            with pytest.raises(FencedError):
                spool.record_seal(old, 10**9, 0.0, "stale")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _write(spool: Spool, apply: object) -> object:
        with spool.write("model step") as txn:
            return apply(txn)  # type: ignore[operator]

    # ------------------------------------------------------------------ invariants

    @invariant()
    def views_agree_with_the_reference(self) -> None:
        ref = self.ref
        for spool in self.spools():
            opened = spool.open_windows()
            assert [w.window_id for w in opened] == sorted(
                (w for w, win in ref.windows.items() if win.sealed_at is None),
                key=lambda w: (ref.windows[w].opened_at, w),
            )
            for w in opened + spool.sealed_windows():
                win = ref.windows[w.window_id]
                assert (w.connection, w.group, w.input) == (win.connection, win.group, win.input)
                assert (w.items, w.next_seq) == (len(win.items), len(win.items))
                assert w.bytes == sum(size for _, _, size in win.items)
                assert (w.sealed_at, w.seal_reason, w.digits) == (
                    win.sealed_at,
                    win.reason,
                    win.digits,
                )
                items = spool.window_items(w.window_id)
                assert [i.position for i in items] == [p for p, _, _ in win.items]
                assert [i.body for i in items] == [ref.batches[p][3] for p, _, _ in win.items]
            assert [w.window_id for w in spool.sealed_windows(connections=["a"])] == sorted(
                (w for w, win in ref.windows.items() if win.sealed_at and win.connection == "a"),
                key=lambda w: (ref.windows[w].sealed_at or 0.0, w),
            )
            files = {f.file_id: f for f in spool.files(limit=10_000)}
            assert set(files) == set(ref.files)
            for file_id, rf in ref.files.items():
                f = files[file_id]
                assert (f.state, f.key, f.attempts, f.last_error) == (
                    rf.state,
                    rf.key,
                    rf.attempts,
                    rf.last_error,
                )
                assert spool.file_body(file_id) == rf.body
            due = spool.due_files("a", self.clock, 1000)
            assert [f.file_id for f in due] == sorted(
                (
                    f
                    for f, rf in ref.files.items()
                    if rf.state is FileState.PENDING
                    and rf.connection == "a"
                    and rf.next_attempt_at <= self.clock
                ),
                key=lambda f: (ref.files[f].next_attempt_at, f),
            )
            held = sum(ref.stored_sizes.values()) + sum(
                len(rf.body or b"") for rf in ref.files.values()
            )
            assert spool.stored_bytes() == held
            counts = spool.counts()
            assert counts.batches == len(ref.batches)
            assert counts.pending_files == sum(
                rf.state is FileState.PENDING for rf in ref.files.values()
            )
            assert spool.max_window_id() == ref.max_window_id
            with spool.write("reading") as txn:
                known = txn.known_requests("in", ["r1", "r2", "r3", "lost"])
            assert known == {r for (_, r) in ref.requests}
            needed = [p for win in ref.windows.values() for p, _, _ in win.items]
            assert spool.low_watermark() == (  # type: ignore[attr-defined]
                min(needed) if needed else ref.next_position
            )
            replayed = list(spool.replay(0))  # type: ignore[attr-defined]
            assert [b.position for b in replayed] == sorted(ref.batches)
            assert [b.body for b in replayed] == [ref.batches[p][3] for p in sorted(ref.batches)]


TestSpoolModel = pytest.mark.timeout(600)(SpoolMachine.TestCase)
TestSpoolModel.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
