"""The batching modes as pure decisions: which batches go into which file, and when it is sealed.

A ``Windower`` tracks window *metadata* only (ids, times, byte and item counts), never the batch
payloads: the service keeps those in its durable spool and applies the decisions returned here.
Time is always passed in as ``now`` (float seconds); nothing in this module reads a clock.

Modes (product spec, "Batching modes"):

- ``per_device``: a group's window opens at its first item and is sealed ``batch_window`` later.
- ``per_session``: sealed when the session ends, after ``session_timeout`` without activity, or at
  ``max_session_age``, whichever comes first.
- ``per_event``: every item is a window of its own, sealed at once.

In every mode a window is sealed early when it reaches ``max_file_bytes``, and the oldest-opened
windows are sealed early while more than ``max_open_windows`` windows or ``max_open_bytes`` bytes
are open.

Deadlines live in a heap of ``(deadline, window_id, group)`` entries with lazy invalidation: an
entry may be stale (its window was sealed, or its session deadline moved later) and is discarded
or re-pushed when it reaches the top. A ``due`` call with nothing due therefore looks at one
entry, however many windows are open.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from s3forward.config import BatchingMode, ConnectionSettings
from s3forward.mparticle import device_key, ends_session, session_key

T = TypeVar("T")

MIB = 1024 * 1024
GIB = 1024 * MIB

# Stale heap entries are tolerated up to this many beyond twice the open windows; past that the
# heaps are rebuilt (amortised O(1) per window opened).
_COMPACT_SLACK = 64

_HeapEntry = tuple[float, int, str]


def group_of(batch: dict[str, Any], input_name: str, mode: BatchingMode) -> str:
    """The window a batch joins: per input and device, or per input and session."""
    if mode is BatchingMode.PER_SESSION:
        session = session_key(batch)
        if session is not None:
            return f"{input_name}\x1fsession:{session}"
    return f"{input_name}\x1f{device_key(batch)}"


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """One window item a stored batch becomes for a connection."""

    group: str
    event_index: int | None
    """The one event of the batch this item is (per_event), or None for the whole batch."""
    ends_session: bool


def items_of(
    batch: dict[str, Any], input_name: str, mode: BatchingMode, position: int
) -> list[ItemPlan]:
    """The items a batch stored at ``position`` becomes for a connection in ``mode``: in
    per_event mode one per event, each a group of its own (named by its position), else the
    batch itself in its device's or session's window (``group_of``).

    One rule for every engine (the single-node spool, cluster replay, the offline forward),
    so that they cut the same files. A batch holding several sessions is split
    (``mparticle.split_by_session``) before this, for per_session connections only.
    ``planned_items`` is the same rule on the facts ``pipeline.prepared`` takes from a batch.
    """
    events = _own_events(batch, mode)
    session = mode is BatchingMode.PER_SESSION
    group = "" if events else group_of(batch, input_name, mode)
    return planned_items(
        mode=mode,
        events=events,
        device_group=group,
        session_group=group if session else None,
        ends_session=session and ends_session(batch),
        input_name=input_name,
        position=position,
    )


def planned_items(
    *,
    mode: BatchingMode,
    events: int,
    device_group: str,
    session_group: str | None,
    ends_session: bool,
    input_name: str,
    position: int,
) -> list[ItemPlan]:
    """``items_of`` from a batch's facts: how many ``events`` it holds, its device's and its
    session's group (``group_of`` per_device and per_session; the session's only needed in
    per_session mode) and whether it ends its session."""
    own = events if mode is BatchingMode.PER_EVENT else 0
    if own:
        return [
            ItemPlan(f"{input_name}\x1fevent:{position}:{index}", index, False)
            for index in range(own)
        ]
    if mode is BatchingMode.PER_SESSION:
        if session_group is None:
            raise ValueError("a per_session item needs the batch's session group")
        return [ItemPlan(session_group, None, ends_session)]
    return [ItemPlan(device_group, None, False)]


def item_count(batch: dict[str, Any], mode: BatchingMode) -> int:
    """``len(items_of(...))``, known before the batch has a position."""
    return planned_item_count(mode, len(batch.get("events") or []))


def planned_item_count(mode: BatchingMode, events: int) -> int:
    """``len(planned_items(...))`` for a batch of ``events`` events."""
    return (events if mode is BatchingMode.PER_EVENT else 0) or 1


def _own_events(batch: dict[str, Any], mode: BatchingMode) -> int:
    """How many events of the batch are items of their own: all of them in per_event mode."""
    return len(batch.get("events") or []) if mode is BatchingMode.PER_EVENT else 0


class SealReason(StrEnum):
    """Why a window was sealed."""

    WINDOW_ELAPSED = "window_elapsed"  # per_device: batch_window after the window opened
    SESSION_ENDED = "session_ended"  # per_session: a session_end arrived
    SESSION_IDLE = "session_idle"  # per_session: session_timeout without activity
    SESSION_MAX_AGE = "session_max_age"  # per_session: max_session_age reached
    FILE_FULL = "file_full"  # max_file_bytes reached, or the next item would overflow it
    TOO_MANY_WINDOWS = "too_many_windows"  # oldest sealed: more than max_open_windows open
    TOO_MANY_BYTES = "too_many_bytes"  # oldest sealed: more than max_open_bytes open
    PER_EVENT = "per_event"  # per_event: every item is its own file
    END_OF_INPUT = "end_of_input"  # seal_all at the end of an offline run
    DRAIN = "drain"  # seal_all asked for by an operator


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """The windowing rules of one connection. Durations in seconds, sizes in bytes."""

    mode: BatchingMode
    batch_window: float = 600.0
    session_timeout: float = 1800.0
    max_session_age: float = 86400.0
    max_file_bytes: int = 16 * MIB
    max_open_windows: int = 250_000
    max_open_bytes: int = GIB

    def __post_init__(self) -> None:
        for name in ("batch_window", "session_timeout", "max_session_age"):
            if not getattr(self, name) > 0:
                value = getattr(self, name)
                raise ValueError(f"WindowPolicy.{name} must be > 0 seconds, got {value!r}")
        for name in ("max_file_bytes", "max_open_windows", "max_open_bytes"):
            if getattr(self, name) < 1:
                value = getattr(self, name)
                raise ValueError(f"WindowPolicy.{name} must be at least 1, got {value!r}")

    @classmethod
    def from_settings(cls, s: ConnectionSettings) -> WindowPolicy:
        """The policy a connection's settings describe."""
        return cls(
            mode=s.batching_mode,
            batch_window=s.batch_window,
            session_timeout=s.session_timeout,
            max_session_age=s.max_session_age,
            max_file_bytes=s.max_file_bytes,
            max_open_windows=s.max_open_windows,
            max_open_bytes=s.max_open_bytes,
        )


@dataclass(slots=True)
class OpenWindow:
    """The state of one open window (at most one per group). Owned by the Windower: read only."""

    window_id: int
    group: str
    opened_at: float
    last_activity: float
    bytes: int
    items: int


@dataclass(frozen=True, slots=True)
class Sealed:
    """A window that is complete: its items form one file."""

    window_id: int
    group: str
    reason: SealReason
    opened_at: float
    items: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an item went, and which windows its placement sealed, in the order they were sealed.

    ``sealed`` may contain ``window_id`` itself (session end, per_event, file full, caps), an
    earlier window of the same group (deadline passed, or the item would overflow it), and the
    oldest windows sealed for the caps.
    """

    window_id: int
    sealed: tuple[Sealed, ...]


class Windower:
    """Decides windows for one connection. Not thread-safe; one instance per connection.

    ``next_id`` supplies window ids (a counter from 1 by default). Ids must be unique among the
    windows the Windower has ever seen, including restored ones; the default counter skips past
    restored ids, an injected ``next_id`` is the caller's responsibility.
    """

    def __init__(self, policy: WindowPolicy, *, next_id: Callable[[], int] | None = None) -> None:
        self.policy = policy
        self._counter = 1
        self._next_id = next_id if next_id is not None else self._default_id
        self._open: dict[str, OpenWindow] = {}
        self._open_bytes = 0
        self._deadlines: list[_HeapEntry] = []  # (deadline, id, group); keys may be stale-early
        self._by_age: list[_HeapEntry] = []  # (opened_at, id, group); stale once sealed
        #: Deadline-heap entries popped so far (a debug counter: due() cost is this, amortised).
        self.heap_pops = 0

    # ----------------------------------------------------------------------------------------
    # Queries

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def open_bytes(self) -> int:
        return self._open_bytes

    @property
    def heap_size(self) -> int:
        """Entries in the two heaps, stale ones included (each at most 2 * open_count + slack)."""
        return max(len(self._deadlines), len(self._by_age))

    def open_windows(self) -> Iterable[OpenWindow]:
        """A snapshot list of the open windows (live objects: do not mutate)."""
        return list(self._open.values())

    def get(self, group: str) -> OpenWindow | None:
        """The group's open window, if any (live object: do not mutate)."""
        return self._open.get(group)

    def deadline_of(self, window: OpenWindow) -> tuple[float, SealReason]:
        """When ``window`` is due under this policy, and the reason it will be sealed with."""
        policy = self.policy
        if policy.mode is BatchingMode.PER_DEVICE:
            return window.opened_at + policy.batch_window, SealReason.WINDOW_ELAPSED
        if policy.mode is BatchingMode.PER_SESSION:
            idle = window.last_activity + policy.session_timeout
            age = window.opened_at + policy.max_session_age
            if idle < age:
                return idle, SealReason.SESSION_IDLE
            return age, SealReason.SESSION_MAX_AGE
        # per_event windows are never left open; one restored in this mode is due at once.
        return window.opened_at, SealReason.PER_EVENT

    def next_deadline(self) -> float | None:
        """The earliest deadline of an open window, so the caller can sleep until then."""
        heap = self._deadlines
        while heap:
            key, window_id, group = heap[0]
            window = self._live(window_id, group)
            if window is None:
                heapq.heappop(heap)
                self.heap_pops += 1
                continue
            deadline, _ = self.deadline_of(window)
            if deadline == key:
                return key
            heapq.heapreplace(heap, (deadline, window_id, group))
            self.heap_pops += 1
        return None

    # ----------------------------------------------------------------------------------------
    # Decisions

    def place(self, group: str, size: int, now: float, *, ends_session: bool = False) -> Placement:
        """Place an item of ``size`` bytes arriving at ``now`` into ``group``'s window.

        The group's open window is sealed first if its deadline has passed (so a late ``due``
        call never stretches a window) or if the item would push it past ``max_file_bytes``.
        After adding, the window is sealed if the session ended (per_session only; ignored in
        other modes) or it reached ``max_file_bytes``. Then the caps seal the oldest-opened
        windows, which may include the window just placed into: the spec says "oldest", and the
        item is already counted in it, so sealing it is safe.
        """
        if size < 0:
            raise ValueError(f"an item size cannot be negative, got {size}")
        sealed: list[Sealed] = []
        if self.policy.mode is BatchingMode.PER_EVENT:
            window_id = self._next_id()
            sealed.append(Sealed(window_id, group, SealReason.PER_EVENT, now, 1, size))
        else:
            window = self._window_for(group, size, now, sealed)
            window_id = window.window_id
            self._add(window, size, now)
            if ends_session and self.policy.mode is BatchingMode.PER_SESSION:
                sealed.append(self._seal(window, SealReason.SESSION_ENDED))
            elif window.bytes >= self.policy.max_file_bytes:
                sealed.append(self._seal(window, SealReason.FILE_FULL))
        sealed.extend(self._enforce_caps())
        return Placement(window_id, tuple(sealed))

    def due(self, now: float) -> list[Sealed]:
        """Seal and return the windows whose deadline is at or before ``now``, in deadline order."""
        out: list[Sealed] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, window_id, group = heapq.heappop(heap)
            self.heap_pops += 1
            window = self._live(window_id, group)
            if window is None:
                continue
            deadline, reason = self.deadline_of(window)
            if deadline <= now:
                out.append(self._seal(window, reason))
            else:  # a session moved its deadline since this entry was pushed
                heapq.heappush(heap, (deadline, window_id, group))
        return out

    def seal_all(self, reason: SealReason = SealReason.END_OF_INPUT) -> list[Sealed]:
        """Seal every open window, oldest-opened first (ties by window id)."""
        windows = sorted(self._open.values(), key=lambda w: (w.opened_at, w.window_id))
        out = [self._seal(w, reason) for w in windows]
        self._deadlines.clear()
        self._by_age.clear()
        return out

    def restore(self, window: OpenWindow) -> None:
        """Re-create a window read back from the durable spool after a restart.

        Its original ``opened_at`` and ``last_activity`` are kept, so its deadline is the one it
        had before the restart (``due`` seals it at once if that has passed). Caps are not
        enforced here but on the next ``place``, so restoring never seals anything. The
        Windower keeps its own copy of ``window``.
        """
        if window.group in self._open:
            current = self._open[window.group].window_id
            raise ValueError(f"group {window.group!r} already has open window {current}")
        if window.items < 1 or window.bytes < 0:
            raise ValueError(
                f"a restored window needs items >= 1 and bytes >= 0, got items={window.items} "
                f"bytes={window.bytes} (window {window.window_id})"
            )
        copy = dataclasses.replace(window)
        self._counter = max(self._counter, copy.window_id + 1)
        self._track(copy)
        self._open_bytes += copy.bytes

    # ----------------------------------------------------------------------------------------
    # Internals

    def _default_id(self) -> int:
        window_id = self._counter
        self._counter += 1
        return window_id

    def _live(self, window_id: int, group: str) -> OpenWindow | None:
        """The open window a heap entry refers to, or None when the entry is stale."""
        window = self._open.get(group)
        return window if window is not None and window.window_id == window_id else None

    def _window_for(self, group: str, size: int, now: float, sealed: list[Sealed]) -> OpenWindow:
        """The group's window that can take the item, sealing the current one if it cannot."""
        window = self._open.get(group)
        if window is not None:
            deadline, reason = self.deadline_of(window)
            if deadline <= now:
                sealed.append(self._seal(window, reason))
                window = None
            elif window.items and window.bytes + size > self.policy.max_file_bytes:
                sealed.append(self._seal(window, SealReason.FILE_FULL))
                window = None
        if window is None:
            window = OpenWindow(self._next_id(), group, now, now, 0, 0)
            self._track(window)
        return window

    def _add(self, window: OpenWindow, size: int, now: float) -> None:
        window.bytes += size
        window.items += 1
        # max() keeps deadlines monotone, which the lazy heap relies on, if time steps back.
        window.last_activity = max(window.last_activity, now)
        self._open_bytes += size

    def _track(self, window: OpenWindow) -> None:
        self._open[window.group] = window
        deadline, _ = self.deadline_of(window)
        heapq.heappush(self._deadlines, (deadline, window.window_id, window.group))
        heapq.heappush(self._by_age, (window.opened_at, window.window_id, window.group))
        stale_bound = 2 * len(self._open) + _COMPACT_SLACK
        if len(self._deadlines) > stale_bound or len(self._by_age) > stale_bound:
            self._compact()

    def _compact(self) -> None:
        """Rebuild both heaps from the open windows, dropping stale entries."""
        windows = self._open.values()
        self._deadlines = [(self.deadline_of(w)[0], w.window_id, w.group) for w in windows]
        self._by_age = [(w.opened_at, w.window_id, w.group) for w in windows]
        heapq.heapify(self._deadlines)
        heapq.heapify(self._by_age)

    def _seal(self, window: OpenWindow, reason: SealReason) -> Sealed:
        # Heap entries stay behind and are recognised as stale by _live().
        del self._open[window.group]
        self._open_bytes -= window.bytes
        return Sealed(
            window.window_id, window.group, reason, window.opened_at, window.items, window.bytes
        )

    def _enforce_caps(self) -> list[Sealed]:
        out: list[Sealed] = []
        policy = self.policy
        while self._open:
            if len(self._open) > policy.max_open_windows:
                reason = SealReason.TOO_MANY_WINDOWS
            elif self._open_bytes > policy.max_open_bytes:
                reason = SealReason.TOO_MANY_BYTES
            else:
                break
            out.append(self._seal(self._oldest(), reason))
        return out

    def _oldest(self) -> OpenWindow:
        while True:  # the caller guarantees an open window, hence a live entry
            _, window_id, group = heapq.heappop(self._by_age)
            window = self._live(window_id, group)
            if window is not None:
                return window


class Grouper(Generic[T]):
    """Runs items through a Windower keeping the item references per window; returns the sealed
    groups in seal order. Pure and in memory: for the offline CLI and for tests."""

    def __init__(self, policy: WindowPolicy) -> None:
        self.windower = Windower(policy)
        self._items: dict[int, list[T]] = {}

    def add(
        self, group: str, item: T, size: int, now: float, *, ends_session: bool = False
    ) -> list[tuple[Sealed, list[T]]]:
        """Place ``item``; return the windows this sealed, each with its items in arrival order."""
        placement = self.windower.place(group, size, now, ends_session=ends_session)
        self._items.setdefault(placement.window_id, []).append(item)
        return self._collect(placement.sealed)

    def due(self, now: float) -> list[tuple[Sealed, list[T]]]:
        """The windows due at ``now``, with their items."""
        return self._collect(self.windower.due(now))

    def finish(self) -> list[tuple[Sealed, list[T]]]:
        """Seal everything still open (END_OF_INPUT), oldest first."""
        return self._collect(self.windower.seal_all(SealReason.END_OF_INPUT))

    def _collect(self, sealed: Iterable[Sealed]) -> list[tuple[Sealed, list[T]]]:
        return [(s, self._items.pop(s.window_id)) for s in sealed]


__all__ = [
    "Grouper",
    "ItemPlan",
    "OpenWindow",
    "Placement",
    "SealReason",
    "Sealed",
    "WindowPolicy",
    "Windower",
    "group_of",
    "item_count",
    "items_of",
]
