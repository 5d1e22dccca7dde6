"""Model-based tests for the Windower: random operations checked against a brute-force model.

The reference model keeps every open window with its items and scans them all on each call; the
Windower must produce exactly the same sealed files (group, reason, opened_at, items) in the same
order. Item-level invariants (nothing lost, nothing duplicated, order kept within a group, size
limits, deadlines honoured, caps held) are checked independently of the model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from s3forward.config import BatchingMode
from s3forward.windows import OpenWindow, Placement, Sealed, SealReason, Windower, WindowPolicy

T0 = 1_000_000.0


@dataclass(frozen=True)
class Item:
    group: str
    seq: int  # global arrival number
    size: int
    at: float


# A sealed file as both sides describe it: group, reason, opened_at, item arrival numbers.
File = tuple[str, SealReason, float, tuple[int, ...]]


@dataclass
class ModelWindow:
    group: str
    order: int  # opening order; the real window ids increase in the same order
    opened_at: float
    last_activity: float
    items: list[Item] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.items)


class ReferenceWindower:
    """The batching rules written the obvious way: a dict of windows, full scans, no heaps."""

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self.open: dict[str, ModelWindow] = {}
        self.opened = itertools.count()

    def deadline(self, w: ModelWindow) -> tuple[float, SealReason]:
        p = self.policy
        if p.mode is BatchingMode.PER_DEVICE:
            return w.opened_at + p.batch_window, SealReason.WINDOW_ELAPSED
        idle = w.last_activity + p.session_timeout
        age = w.opened_at + p.max_session_age
        return (idle, SealReason.SESSION_IDLE) if idle < age else (age, SealReason.SESSION_MAX_AGE)

    def seal(self, w: ModelWindow, reason: SealReason) -> File:
        del self.open[w.group]
        return (w.group, reason, w.opened_at, tuple(i.seq for i in w.items))

    def place(self, item: Item, ends_session: bool) -> list[File]:
        p = self.policy
        if p.mode is BatchingMode.PER_EVENT:
            return [(item.group, SealReason.PER_EVENT, item.at, (item.seq,))]
        out = []
        w = self.open.get(item.group)
        if w is not None and self.deadline(w)[0] <= item.at:
            out.append(self.seal(w, self.deadline(w)[1]))
        elif w is not None and w.bytes + item.size > p.max_file_bytes:
            out.append(self.seal(w, SealReason.FILE_FULL))
        if item.group not in self.open:
            self.open[item.group] = ModelWindow(item.group, next(self.opened), item.at, item.at)
        w = self.open[item.group]
        w.items.append(item)
        w.last_activity = max(w.last_activity, item.at)
        if ends_session and p.mode is BatchingMode.PER_SESSION:
            out.append(self.seal(w, SealReason.SESSION_ENDED))
        elif w.bytes >= p.max_file_bytes:
            out.append(self.seal(w, SealReason.FILE_FULL))
        while True:
            if len(self.open) > p.max_open_windows:
                reason = SealReason.TOO_MANY_WINDOWS
            elif sum(x.bytes for x in self.open.values()) > p.max_open_bytes:
                reason = SealReason.TOO_MANY_BYTES
            else:
                break
            oldest = min(self.open.values(), key=lambda x: (x.opened_at, x.order))
            out.append(self.seal(oldest, reason))
        return out

    def due(self, now: float) -> list[File]:
        ready = [w for w in self.open.values() if self.deadline(w)[0] <= now]
        ready.sort(key=lambda w: (self.deadline(w)[0], w.order))
        return [self.seal(w, self.deadline(w)[1]) for w in ready]

    def seal_all(self, reason: SealReason) -> list[File]:
        ordered = sorted(self.open.values(), key=lambda w: (w.opened_at, w.order))
        return [self.seal(w, reason) for w in ordered]

    def next_deadline(self) -> float | None:
        return min((self.deadline(w)[0] for w in self.open.values()), default=None)


policies = st.builds(
    WindowPolicy,
    mode=st.sampled_from(BatchingMode),
    batch_window=st.integers(5, 100).map(float),
    session_timeout=st.integers(5, 60).map(float),
    max_session_age=st.integers(10, 200).map(float),
    max_file_bytes=st.integers(10, 100),
    max_open_windows=st.integers(1, 6),
    max_open_bytes=st.integers(10, 400),
)
groups = st.sampled_from("abcdef")
advances = st.sampled_from([0.0, 0.0, 1.0, 3.0, 10.0, 30.0, 100.0])


class WindowerMachine(RuleBasedStateMachine):
    """Drives a Windower and the reference model with the same operations."""

    @initialize(policy=policies)
    def start(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self.ids = itertools.count(1)
        self.windower = Windower(policy, next_id=lambda: next(self.ids))
        self.model = ReferenceWindower(policy)
        self.now = T0
        self.seq = itertools.count()
        self.placed: list[Item] = []
        self.items_by_window: dict[int, list[Item]] = {}
        self.sealed_files: list[tuple[Sealed, list[Item]]] = []
        self.seen_ids: set[int] = set()

    # -- operations ----------------------------------------------------------------------------

    @rule(group=groups, size=st.integers(0, 120), advance=advances, ends_session=st.booleans())
    def place(self, group: str, size: int, advance: float, ends_session: bool) -> None:
        self.now += advance
        item = Item(group, next(self.seq), size, self.now)
        self.placed.append(item)
        placement = self.windower.place(group, size, self.now, ends_session=ends_session)
        self._record_placement(placement, item)
        expected = self.model.place(item, ends_session)
        assert self._collect(placement.sealed) == expected
        assert self.windower.open_count <= self.policy.max_open_windows
        assert self.windower.open_bytes <= self.policy.max_open_bytes

    @rule(advance=advances)
    def due(self, advance: float) -> None:
        self.now += advance
        sealed = self.windower.due(self.now)
        for s in sealed:
            items = self.items_by_window[s.window_id]
            assert self._deadline(items) <= self.now, "sealed before its deadline"
        assert self._collect(sealed) == self.model.due(self.now)
        for window in self.windower.open_windows():
            items = self.items_by_window[window.window_id]
            assert self._deadline(items) > self.now, "a due window was left open"

    @rule(reason=st.sampled_from([SealReason.END_OF_INPUT, SealReason.DRAIN]))
    def seal_all(self, reason: SealReason) -> None:
        sealed = self.windower.seal_all(reason)
        assert self._collect(sealed) == self.model.seal_all(reason)
        assert (self.windower.open_count, self.windower.open_bytes) == (0, 0)

    @precondition(lambda self: self.windower.open_count > 0)
    @rule()
    def restart(self) -> None:
        """The service restarts: a fresh Windower gets the open windows back from the spool."""
        spooled = [
            OpenWindow(w.window_id, w.group, w.opened_at, w.last_activity, w.bytes, w.items)
            for w in self.windower.open_windows()
        ]
        self.windower = Windower(self.policy, next_id=lambda: next(self.ids))
        for window in reversed(spooled):  # the spool's order is not opening order
            self.windower.restore(window)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def next_deadline_matches_the_model(self) -> None:
        assert self.windower.next_deadline() == self.model.next_deadline()

    @invariant()
    def every_item_is_in_exactly_one_window_in_arrival_order(self) -> None:
        open_items = [self.items_by_window[w.window_id] for w in self.windower.open_windows()]
        held = [i for _, items in self.sealed_files for i in items]
        held += [i for items in open_items for i in items]
        assert sorted(i.seq for i in held) == [i.seq for i in self.placed]
        for group in "abcdef":
            in_windows = [
                i.seq for _, items in self.sealed_files for i in items if i.group == group
            ]
            in_windows += [i.seq for items in open_items for i in items if i.group == group]
            assert in_windows == [i.seq for i in self.placed if i.group == group]

    @invariant()
    def open_window_metadata_matches_its_items(self) -> None:
        total = 0
        for w in self.windower.open_windows():
            items = self.items_by_window[w.window_id]
            assert (w.items, w.bytes) == (len(items), sum(i.size for i in items))
            assert w.opened_at <= items[0].at
            total += w.bytes
        assert self.windower.open_bytes == total

    # -- helpers -------------------------------------------------------------------------------

    def _record_placement(self, placement: Placement, item: Item) -> None:
        if placement.window_id not in self.items_by_window:
            assert placement.window_id not in self.seen_ids, "a window id was reused"
            self.seen_ids.add(placement.window_id)
        self.items_by_window.setdefault(placement.window_id, []).append(item)

    def _collect(self, sealed: list[Sealed] | tuple[Sealed, ...]) -> list[File]:
        files = []
        for s in sealed:
            items = self.items_by_window.pop(s.window_id)
            self._check_sealed(s, items)
            self.sealed_files.append((s, items))
            files.append((s.group, s.reason, s.opened_at, tuple(i.seq for i in items)))
        return files

    def _check_sealed(self, s: Sealed, items: list[Item]) -> None:
        assert s.items == len(items) >= 1
        assert s.bytes == sum(i.size for i in items)
        assert s.bytes <= self.policy.max_file_bytes or s.items == 1
        assert all(i.group == s.group for i in items)

    def _deadline(self, items: list[Item]) -> float:
        """A window's deadline computed from its items' arrival times (restores keep times)."""
        p = self.policy
        opened, last = items[0].at, max(i.at for i in items)
        if p.mode is BatchingMode.PER_DEVICE:
            return opened + p.batch_window
        if p.mode is BatchingMode.PER_SESSION:
            return min(last + p.session_timeout, opened + p.max_session_age)
        return opened


TestWindowerModel = WindowerMachine.TestCase
TestWindowerModel.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
