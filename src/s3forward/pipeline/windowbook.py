"""WindowBook: every connection's open windows, placed and sealed inside writer commits.

It owns one ``Windower`` per connection (the pure decisions of ``windows.py``) plus what the
spool needs to record them: the next item number of each open window and its input. Its state
is rebuilt from the spool with ``load`` (at start and after a failed commit), all or nothing.
All methods except ``load`` run on the writer thread, inside a transaction.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from s3forward.config import Config, ConnectionSettings
from s3forward.metrics import Metrics
from s3forward.pipeline.writer import Op
from s3forward.spool.base import SpoolTransaction, SpoolView, StoredWindow
from s3forward.windows import OpenWindow, Sealed, SealReason, Windower, WindowPolicy

log = structlog.get_logger("s3forward.windows")


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    """Which connections a reload added, removed or changed (by name)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass(slots=True)
class ConnectionWindows:
    settings: ConnectionSettings
    windower: Windower
    next_seq: dict[int, int] = field(default_factory=dict)


class WindowBook:
    """The open windows of every configured connection."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        rng: random.Random,
        after_commit: Callable[[Callable[[], None]], None],
        on_sealed: Callable[[], None],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.rng = rng
        self._after_commit = after_commit
        self._on_sealed = on_sealed
        self.connections: dict[str, ConnectionWindows] = {}
        self._next_window_id = 0

    def load(self, spool: SpoolView) -> None:
        """Rebuild every connection's windows from the spool; all or nothing."""
        next_window_id = spool.max_window_id()
        connections = {
            name: ConnectionWindows(
                settings, Windower(WindowPolicy.from_settings(settings), next_id=self._new_id)
            )
            for name, settings in self.config.connections.items()
        }
        orphans: set[str] = set()
        for stored in spool.open_windows():
            state = connections.get(stored.connection)
            if state is None:
                orphans.add(stored.connection)  # a removed connection keeps its data on disk
                continue
            state.windower.restore(_open(stored))
            state.next_seq[stored.window_id] = stored.next_seq
        if orphans:
            log.warning(
                "the spool holds windows of connections no longer configured; their data is "
                "kept but not forwarded until they are configured again",
                connections=sorted(orphans),
            )
        self._next_window_id = next_window_id
        self.connections = connections
        self.update_gauges()

    def switch(self, config: Config, spool: SpoolView) -> ConfigChanges:
        """Take ``config`` (a reload), on the writer thread between two placements.

        - an added connection starts with the open windows the spool still holds for it (a
          connection removed earlier and configured again resumes them);
        - a removed connection's windows stay in the spool, untouched, until a connection of
          that name is configured again;
        - a changed connection keeps its open windows; their deadlines and caps follow the
          new window settings from now on.
        """
        old = self.connections
        added = [name for name in config.connections if name not in old]
        removed = [name for name in old if name not in config.connections]
        changed = [
            name
            for name, settings in config.connections.items()
            if name in old and old[name].settings != settings
        ]
        stored = spool.open_windows() if added else []
        connections: dict[str, ConnectionWindows] = {}
        for name, settings in config.connections.items():
            policy = WindowPolicy.from_settings(settings)
            state = old.get(name)
            if state is None:
                state = ConnectionWindows(settings, Windower(policy, next_id=self._new_id))
                for window in stored:
                    if window.connection == name:
                        state.windower.restore(_open(window))
                        state.next_seq[window.window_id] = window.next_seq
            else:
                if state.windower.policy != policy:
                    # Rebuilt from the live windows: deadlines follow the new policy.
                    windower = Windower(policy, next_id=self._new_id)
                    for live in state.windower.open_windows():
                        windower.restore(live)
                    state.windower = windower
                state.settings = settings
            connections[name] = state
        self.connections = connections
        self.config = config
        for name in removed:
            self.metrics.windows_open.labels(name).set(0)
        self.update_gauges()
        return ConfigChanges(tuple(added), tuple(removed), tuple(changed))

    def _new_id(self) -> int:
        self._next_window_id += 1
        return self._next_window_id

    def for_input(self, input_name: str) -> list[ConnectionWindows]:
        return [self.connections[c.name] for c in self.config.connections_for_input(input_name)]

    def place(
        self,
        txn: SpoolTransaction,
        now: float,
        state: ConnectionWindows,
        *,
        group: str,
        input_name: str,
        position: int,
        event_index: int | None,
        size: int,
        ends_session: bool,
    ) -> None:
        """Put one item in its window (opening it if needed) and record what that sealed."""
        placement = state.windower.place(group, size, now, ends_session=ends_session)
        window_id = placement.window_id
        seq = state.next_seq.get(window_id)
        if seq is None:
            txn.open_window(window_id, state.settings.name, group, input_name, now)
            seq = 0
        state.next_seq[window_id] = seq + 1
        txn.add_item(window_id, seq, position, event_index, size, now)
        self.seal(txn, now, state, placement.sealed)

    def seal(
        self, txn: SpoolTransaction, now: float, state: ConnectionWindows, sealed: Iterable[Sealed]
    ) -> int:
        """Record seals; the key's five digits are chosen here, once."""
        count = 0
        for window in sealed:
            txn.seal_window(window.window_id, now, window.reason.value, self.rng.randrange(100_000))
            state.next_seq.pop(window.window_id, None)
            count += 1
        if count:
            self._after_commit(self._on_sealed)
        return count

    # CommitParticipant: every commit seals what is due by then.

    def before_ops(self, txn: SpoolTransaction, now: float, ops: list[Op]) -> None:
        return None

    def after_ops(self, txn: SpoolTransaction, now: float) -> None:
        for state in self.connections.values():
            self.seal(txn, now, state, state.windower.due(now))

    def next_wakeup(self, now: float) -> float | None:
        return self.next_deadline()

    def seal_all(self, txn: SpoolTransaction, now: float, reason: SealReason) -> int:
        return sum(
            self.seal(txn, now, state, state.windower.seal_all(reason))
            for state in self.connections.values()
        )

    def next_deadline(self) -> float | None:
        deadlines = [
            d for s in self.connections.values() if (d := s.windower.next_deadline()) is not None
        ]
        return min(deadlines, default=None)

    def open_counts(self) -> dict[str, int]:
        return {name: s.windower.open_count for name, s in self.connections.items()}

    def update_gauges(self) -> None:
        for name, state in self.connections.items():
            self.metrics.windows_open.labels(name).set(state.windower.open_count)


def _open(stored: StoredWindow) -> OpenWindow:
    return OpenWindow(
        window_id=stored.window_id,
        group=stored.group,
        opened_at=stored.opened_at,
        last_activity=stored.last_activity,
        bytes=stored.bytes,
        items=stored.items,
    )
