"""Reload in process: ``Engine.apply_config`` and ``Delivery.apply_config`` (issue 12).

These tests are the contract of a reload, whatever the engine's internal structure: nothing
accepted is lost or duplicated, open windows keep their data, and each kind of change takes
effect where the README says it does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3forward.clock import ManualClock
from s3forward.config import (
    Config,
    ConnectionSettings,
    DateFolders,
    DeliverySettings,
    Destination,
    InputSettings,
    Secret,
    SpoolSettings,
)
from s3forward.delivery import Delivery
from s3forward.engine import Engine
from s3forward.errors import StoppingError
from s3forward.layout import EncodedObject
from s3forward.metrics import Metrics
from s3forward.sinks.base import WriteOutcome
from s3forward.spool.sqlite import SqliteSpool


def connection(tmp_path: Path, name: str = "local", **overrides: Any) -> ConnectionSettings:
    settings = ConnectionSettings(
        name=name,
        inputs=("app",),
        s3_bucket_name="",
        destination=Destination.LOCALDIR,
        local_path=tmp_path / f"bucket-{name}",
        store_data_in_folders_by_date=DateFolders.NONE,
        batch_window=600.0,
    )
    return replace(settings, **overrides)


def make_config(tmp_path: Path, *connections: ConnectionSettings, **inputs: str) -> Config:
    names = inputs or {"app": "key"}
    return Config(
        inputs={n: InputSettings(n, key, Secret("secret"), n.title()) for n, key in names.items()},
        connections={c.name: c for c in connections or (connection(tmp_path),)},
        spool=SpoolSettings(path=tmp_path / "spool.db", max_bytes=64 * 1024 * 1024),
    )


def batch(device: str, name: str) -> dict[str, Any]:
    return {
        "device_info": {"android_uuid": device},
        "events": [
            {"event_type": "custom_event", "data": {"event_name": name, "custom_event_type": "o"}}
        ],
    }


class Harness:
    def __init__(self, config: Config) -> None:
        self.clock = ManualClock(1_700_000_000.0)
        self.metrics = Metrics()
        self.spool = SqliteSpool.open(config.spool.path)
        self.engine = Engine(config, self.spool, self.metrics, clock=self.clock)
        self.engine.start()

    def submit(self, *batches: dict[str, Any], input_name: str = "app") -> Any:
        return self.engine.submit_sync(input_name, list(batches), received_at=self.clock.now())

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.engine.run(lambda conn, now: None)
        assert self.engine.settle(10)

    def files(self, connection: str | None = None) -> list[tuple[str, str, list[str]]]:
        """(connection, key, event names) of every stored file, oldest first."""
        out = []
        for stored in reversed(self.spool.files(limit=10_000)):
            if connection is not None and stored.connection != connection:
                continue
            body = self.spool.file_body(stored.file_id) or b""
            events = [
                e["data"]["event_name"]
                for line in body.splitlines()
                for e in orjson.loads(line)["events"]
            ]
            out.append((stored.connection, stored.key, events))
        return out

    def close(self) -> None:
        self.engine.close()
        self.spool.close()


@pytest.fixture
def make_harness() -> Iterator[Any]:
    made: list[Harness] = []

    def make(config: Config) -> Harness:
        h = Harness(config)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_a_shorter_batch_window_applies_to_a_window_already_open(
    tmp_path: Path, make_harness: Any
) -> None:
    """The open window keeps its data and its open time; its deadline follows the new setting."""
    config = make_config(tmp_path)
    h = make_harness(config)
    h.submit(batch("d1", "before"))
    h.tick(5)
    assert h.files() == []
    changes = h.engine.apply_config(
        replace(config, connections={"local": connection(tmp_path, batch_window=10.0)})
    )
    assert changes.changed == ("local",)
    h.submit(batch("d1", "after"))
    h.tick(6)  # 11 s after the window opened: due under the new 10 s window
    assert [events for _, _, events in h.files()] == [["before", "after"]]


def test_a_changed_file_setting_applies_to_files_built_after_the_reload(
    tmp_path: Path, make_harness: Any
) -> None:
    """Files are built from the settings in effect when they are built, open windows included."""
    config = make_config(tmp_path, connection(tmp_path, batch_window=10.0))
    h = make_harness(config)
    h.submit(batch("d1", "one"))
    h.engine.apply_config(
        replace(
            config,
            connections={"local": connection(tmp_path, batch_window=10.0, folder_name="renamed")},
        )
    )
    h.tick(11)
    [(_, key, events)] = h.files()
    assert key.startswith("renamed/")
    assert events == ["one"]


def test_an_added_connection_forwards_only_batches_accepted_after_the_reload(
    tmp_path: Path, make_harness: Any
) -> None:
    config = make_config(tmp_path, connection(tmp_path, batch_window=10.0))
    h = make_harness(config)
    h.submit(batch("d1", "old"))
    second = connection(tmp_path, "second", batch_window=10.0)
    changes = h.engine.apply_config(
        replace(config, connections={**config.connections, "second": second})
    )
    assert changes.added == ("second",)
    h.submit(batch("d1", "new"))
    h.tick(11)
    assert [e for _, _, e in h.files("local")] == [["old", "new"]]
    assert [e for _, _, e in h.files("second")] == [["new"]]


def test_a_removed_connection_keeps_its_open_windows_and_resumes_them_when_added_back(
    tmp_path: Path, make_harness: Any
) -> None:
    """Removing a connection never drops its data: the windows wait in the spool."""
    local = connection(tmp_path, batch_window=10.0)
    other = connection(tmp_path, "other", batch_window=10.0)
    config = make_config(tmp_path, local, other)
    h = make_harness(config)
    h.submit(batch("d1", "kept"))
    changes = h.engine.apply_config(replace(config, connections={"local": local}))
    assert changes.removed == ("other",)
    h.submit(batch("d1", "local-only"))
    h.tick(11)
    assert h.files("other") == []
    assert [w.connection for w in h.spool.open_windows()] == ["other"]
    assert h.engine.apply_config(config).added == ("other",)
    h.tick(1)  # past its deadline already: sealed on the next commit
    assert [e for _, _, e in h.files("other")] == [["kept"]]
    assert [e for _, _, e in h.files("local")] == [["kept", "local-only"]]


def test_added_and_removed_inputs_take_effect_on_the_next_request(
    tmp_path: Path, make_harness: Any
) -> None:
    config = make_config(tmp_path)
    h = make_harness(config)
    both = connection(tmp_path, inputs=("app", "web"))
    h.engine.apply_config(
        replace(
            make_config(tmp_path, both, app="key", web="key2"),
        )
    )
    assert h.submit(batch("d1", "web"), input_name="web").stored == 1
    h.engine.apply_config(make_config(tmp_path, connection(tmp_path)))
    with pytest.raises(StoppingError, match="no longer configured"):
        h.submit(batch("d1", "late"), input_name="web")


def test_the_spool_path_cannot_change_while_running(tmp_path: Path, make_harness: Any) -> None:
    config = make_config(tmp_path)
    h = make_harness(config)
    moved = replace(config, spool=SpoolSettings(path=tmp_path / "elsewhere.db"))
    with pytest.raises(ValueError, match=r"spool\.path"):
        h.engine.apply_config(moved)
    assert h.engine.config is config


def test_an_unchanged_config_changes_nothing(tmp_path: Path, make_harness: Any) -> None:
    config = make_config(tmp_path)
    h = make_harness(config)
    changes = h.engine.apply_config(make_config(tmp_path))
    assert (changes.added, changes.removed, changes.changed) == ((), (), ())


def test_batches_accepted_during_repeated_reloads_are_each_stored_exactly_once(
    tmp_path: Path, make_harness: Any
) -> None:
    """Submitters and reloads race; every accepted batch is in exactly one file per connection."""
    a = connection(tmp_path, batch_window=5.0)
    b = connection(tmp_path, "b", batch_window=5.0)
    configs = [
        make_config(tmp_path, a, b),
        make_config(tmp_path, replace(a, batch_window=3.0), b),
        make_config(tmp_path, a, replace(b, folder_name="x")),
    ]
    h = make_harness(configs[0])
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 300:
            name = f"w{worker}-{n}"
            h.submit(batch(f"d{n % 7}", name))
            with lock:
                accepted.append(name)
            n += 1

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for round_ in range(30):
        h.engine.apply_config(configs[round_ % len(configs)])
        h.clock.advance(0.5)
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join(60)
    h.engine.apply_config(configs[0])
    h.engine.seal_all()
    assert h.engine.settle(30)
    for name in ("local", "b"):
        landed = [e for _, _, events in h.files(name) for e in events]
        assert sorted(landed) == sorted(accepted), name


def test_a_changed_connection_makes_its_files_waiting_for_a_retry_due_now(
    tmp_path: Path, make_harness: Any
) -> None:
    """Rotated keys after an AccessDenied must not wait out permanent_retry_interval."""
    config = make_config(tmp_path, connection(tmp_path, batch_window=1.0))
    h = make_harness(config)
    h.submit(batch("d1", "x"))
    h.tick(2)
    [stored] = h.spool.files(limit=10)
    h.engine.ledger.failed(stored.file_id, h.clock.now() + 300, "AccessDenied: no")
    assert h.spool.due_files("local", h.clock.now(), 10) == []
    rotated = replace(config.connections["local"], access_key_id=Secret("new"))
    h.engine.apply_config(replace(config, connections={"local": rotated}))
    assert [f.file_id for f in h.spool.due_files("local", h.clock.now(), 10)] == [stored.file_id]


# ---------------------------------------------------------------------------- delivery


class RecordingSink:
    """A sink double that records what it was asked to write; can block until released."""

    def __init__(self, name: str, gate: threading.Event | None = None) -> None:
        self.name = name
        self.keys: list[str] = []
        self.gate = gate
        self.closed = False
        self.started = threading.Event()

    def write(self, obj: EncodedObject) -> WriteOutcome:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        self.keys.append(obj.key)
        return WriteOutcome.CREATED

    def close(self) -> None:
        self.closed = True


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_rotated_credentials_apply_to_the_next_upload_and_an_upload_in_flight_finishes(
    tmp_path: Path, make_harness: Any
) -> None:
    """The upload that started on the old sink completes there; the next one uses the new sink."""
    config = make_config(tmp_path, connection(tmp_path, batch_window=1.0))
    h = make_harness(config)
    gate = threading.Event()
    old_sink = RecordingSink("local", gate)
    delivery = Delivery(config, h.engine.ledger, {"local": old_sink}, h.metrics, poll_interval=0.05)
    delivery.start()
    try:
        h.submit(batch("d1", "first"))
        h.tick(2)
        assert old_sink.started.wait(20)
        rotated = replace(config.connections["local"], access_key_id=Secret("new"))
        new_config = replace(config, connections={"local": rotated})
        new_sink = RecordingSink("local")
        h.engine.apply_config(new_config)
        delivery.apply_config(new_config, {"local": new_sink})
        gate.set()
        wait_until(lambda: len(old_sink.keys) == 1)
        h.submit(batch("d2", "second"))
        h.tick(2)
        wait_until(lambda: len(new_sink.keys) == 1)
        assert old_sink.keys != new_sink.keys
        wait_until(lambda: h.spool.counts().pending_files == 0)
    finally:
        assert delivery.stop(10)
    assert old_sink.closed and new_sink.closed


def test_a_removed_connection_stops_delivering_and_keeps_its_files(
    tmp_path: Path, make_harness: Any
) -> None:
    local = connection(tmp_path, batch_window=1.0)
    other = connection(tmp_path, "other", batch_window=1.0)
    config = make_config(tmp_path, local, other)
    h = make_harness(config)
    sinks = {"local": RecordingSink("local"), "other": RecordingSink("other", threading.Event())}
    delivery = Delivery(config, h.engine.ledger, sinks, h.metrics, poll_interval=0.05)
    delivery.start()
    try:
        only_local = replace(config, connections={"local": local})
        h.engine.apply_config(only_local)
        delivery.apply_config(only_local, {})
        assert set(delivery.health()) == {"local"}
        h.engine.apply_config(config)  # the engine still builds for both, delivery only local
        h.submit(batch("d1", "x"))
        h.tick(2)
        wait_until(lambda: len(sinks["local"].keys) == 1)
        time.sleep(0.3)
        assert not sinks["other"].started.is_set()
        pending = [f for f in h.spool.files(limit=100) if f.connection == "other"]
        assert len(pending) == 1
    finally:
        delivery.stop(5)


def test_more_workers_per_connection_start_on_reload(tmp_path: Path, make_harness: Any) -> None:
    config = make_config(tmp_path, connection(tmp_path, batch_window=1.0))
    config = replace(config, delivery=DeliverySettings(workers_per_connection=1))
    h = make_harness(config)
    gate = threading.Event()
    sink = RecordingSink("local", gate)
    delivery = Delivery(config, h.engine.ledger, {"local": sink}, h.metrics, poll_interval=0.05)
    delivery.start()
    try:
        more = replace(config, delivery=DeliverySettings(workers_per_connection=3))
        delivery.apply_config(more, {})
        names = {t.name for t in threading.enumerate()}
        assert {"deliver-local-0", "deliver-local-1", "deliver-local-2"} <= names
    finally:
        gate.set()
        delivery.stop(5)
