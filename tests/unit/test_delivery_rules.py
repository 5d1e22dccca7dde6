"""Delivery's rules on a manual clock, over MemorySpool and a fault-injecting MemorySink.

No servers and no sleeping: each test stores files through the real engine, then drives one
connection's delivery step by step (``claim`` then ``deliver``) while moving the clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from s3forward.delivery import Delivery, backoff_delay
from s3forward.engine import Engine
from s3forward.errors import PermanentSinkError, TransientSinkError
from s3forward.metrics import Metrics
from s3forward.sinks.memory import MemorySink
from s3forward.spool.base import FileState
from s3forward.spool.memory import MemorySpool

DELIVERY = DeliverySettings(
    workers_per_connection=1,
    backoff_base=1.0,
    backoff_cap=8.0,
    permanent_retry_interval=300.0,
    unhealthy_after=20.0,
)


def make_config(tmp_path: Path) -> Config:
    connection = ConnectionSettings(
        name="c",
        inputs=("app",),
        s3_bucket_name="",
        destination=Destination.LOCALDIR,
        local_path=tmp_path,
        store_data_in_folders_by_date=DateFolders.NONE,
        send_as_batch=False,  # one file per event, sealed at once
    )
    return Config(
        inputs={"app": InputSettings("app", "k", Secret("s"), "App")},
        connections={"c": connection},
        spool=SpoolSettings(path=tmp_path / "unused.db"),
        delivery=DELIVERY,
    )


@dataclass
class Rig:
    clock: ManualClock
    spool: MemorySpool
    engine: Engine
    sink: MemorySink
    delivery: Delivery

    @property
    def conn(self) -> Any:
        return self.delivery._connections["c"]

    def store(self, count: int = 1) -> None:
        for n in range(count):
            batch = {
                "device_info": {"android_uuid": f"d{n}"},
                "events": [{"event_type": "custom_event", "data": {"event_name": f"e{n}"}}],
            }
            self.engine.submit_sync("app", [batch], received_at=self.clock.now())
        assert self.engine.settle(10)

    def step(self) -> bool:
        """One worker iteration: claim a due file and deliver it. False when none was due."""
        stored = self.conn.claim()
        if stored is None:
            return False
        try:
            self.conn.deliver(stored)
        finally:
            self.conn.release(stored.file_id)
        return True

    def pending(self) -> list[Any]:
        return self.spool.files(FileState.PENDING)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    config = make_config(tmp_path)
    clock = ManualClock(1_000.0)
    spool = MemorySpool()
    metrics = Metrics()
    engine = Engine(config, spool, metrics, clock=clock, rng=random.Random(1))
    sink = MemorySink()
    delivery = Delivery(
        config, engine.ledger, {"c": sink}, metrics, clock=clock, rng=random.Random(2)
    )
    engine.start()
    yield Rig(clock, spool, engine, sink, delivery)
    engine.close()


def test_a_delivered_file_is_in_the_bucket_once_and_released_from_the_spool(rig: Rig) -> None:
    """Success: the object lands, the file turns delivered, its bytes leave the spool's count."""
    rig.store()
    assert rig.step()
    assert len(rig.sink.objects) == 1
    assert rig.pending() == []
    assert rig.engine.spool_bytes == 0
    assert rig.conn.health.healthy


def test_a_transient_error_schedules_a_retry_with_capped_backoff(rig: Rig) -> None:
    """A SlowDown is retried after the backoff delay, not before, and then lands."""
    rig.store()
    rig.sink.fail_next(TransientSinkError("slow down", code="SlowDown"))
    assert rig.step()
    (waiting,) = rig.pending()
    assert waiting.attempts == 1 and waiting.last_error == "SlowDown: slow down"
    delay = waiting.next_attempt_at - rig.clock.now()
    assert DELIVERY.backoff_base / 2 <= delay <= DELIVERY.backoff_base
    assert not rig.step(), "not due before its backoff"
    rig.clock.advance(delay)
    assert rig.step()
    assert rig.pending() == [] and len(rig.sink.objects) == 1


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    """Attempt n waits between half and all of min(cap, base * 2**n)."""
    rng = random.Random(5)
    for attempt in range(12):
        ceiling = min(8.0, 1.0 * 2**attempt)
        delay = backoff_delay(attempt, 1.0, 8.0, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_a_permanent_error_pauses_the_connection_and_keeps_the_data(rig: Rig) -> None:
    """AccessDenied marks the connection unhealthy at once and pauses it for the long interval."""
    rig.store(2)
    rig.sink.fail_next(PermanentSinkError("denied", code="AccessDenied"))
    assert rig.step()
    assert not rig.conn.health.healthy
    assert rig.conn.health.last_error_code == "AccessDenied"
    rig.clock.advance(DELIVERY.permanent_retry_interval * 0.8)
    assert not rig.step(), "paused: nothing is tried before the permanent retry interval"
    assert len(rig.pending()) == 2
    rig.clock.advance(DELIVERY.permanent_retry_interval * 0.4)
    assert rig.step() and rig.step()
    assert rig.pending() == [] and rig.conn.health.healthy


def test_transient_errors_turn_the_connection_unhealthy_after_unhealthy_after(rig: Rig) -> None:
    """Failing for longer than unhealthy_after marks the connection unhealthy; a success heals."""
    rig.store()
    rig.sink.fail_next(TransientSinkError("reset", code="ConnectionReset"), times=50)
    assert rig.step()
    assert rig.conn.health.healthy, "one failure is not yet unhealthy"
    while rig.clock.now() - 1_000.0 < DELIVERY.unhealthy_after:
        rig.clock.advance(DELIVERY.backoff_cap)
        rig.step()
    assert not rig.conn.health.healthy
    rig.sink._faults.clear()
    rig.clock.advance(DELIVERY.backoff_cap)
    assert rig.step()
    assert rig.conn.health.healthy and rig.pending() == []


def test_a_key_held_by_a_foreign_object_gets_new_digits_and_the_foreign_object_stays(
    rig: Rig,
) -> None:
    """KeyTaken: the file is re-keyed (same prefix, new digits) and written there."""
    rig.store()
    (waiting,) = rig.pending()
    rig.sink.take(waiting.key, b"someone else's")
    assert rig.step()
    (rekeyed,) = rig.pending()
    assert rekeyed.key != waiting.key and rekeyed.key[:-10] == waiting.key[:-10]
    assert rig.step()
    assert rig.sink.objects[waiting.key] == b"someone else's"
    assert rekeyed.key in rig.sink.objects and rig.pending() == []


def test_a_write_whose_answer_was_lost_is_recognised_on_retry(rig: Rig) -> None:
    """The object landed but the answer failed: the retry finds its own object, no second copy."""
    rig.store()
    rig.sink.land_then_fail(TransientSinkError("timeout", code="Timeout"))
    assert rig.step()
    assert len(rig.sink.objects) == 1 and len(rig.pending()) == 1
    rig.clock.advance(DELIVERY.backoff_cap)
    assert rig.step()
    assert len(rig.sink.objects) == 1 and rig.pending() == []
    assert len(set(rig.sink.attempts)) == 1, "never written under a second key"


def test_a_failed_spool_commit_is_refused_and_nothing_half_applied(rig: Rig) -> None:
    """MemorySpool's injected commit failure: the submit fails and the spool is unchanged."""
    from s3forward.errors import SpoolUnavailableError

    rig.spool.fail_next_commit = OSError("disk full")
    batch = {"device_info": {"android_uuid": "x"}, "events": []}
    with pytest.raises(SpoolUnavailableError):
        rig.engine.submit_sync("app", [batch], received_at=rig.clock.now())
    assert rig.spool.counts().batches == 0
    assert rig.engine.submit_sync("app", [batch], received_at=rig.clock.now()).stored == 1
