"""What an HTTP worker process sends the engine besides batches: its counts (issue 10)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from s3forward.config import (
    Config,
    ConnectionSettings,
    DateFolders,
    Destination,
    InputSettings,
    Secret,
    ServerSettings,
)
from s3forward.errors import SpoolUnavailableError
from s3forward.metrics import Metrics
from s3forward.multicore.frames import Submit
from s3forward.multicore.hub import WorkerHub
from s3forward.multicore.worker import EngineClient, MetricsRelay, forwarded_paths


def test_a_worker_sends_each_increment_once_and_the_engine_adds_them_up() -> None:
    """Counts are sent as increments since the last Stats: two rounds of sending add up to
    exactly what the worker counted, latency observations included, never twice."""
    worker = Metrics()
    relay = MetricsRelay(worker)
    worker.batches_received_total.labels("app").inc(3)
    worker.requests_rejected_total.labels("-", "unauthorized").inc()
    relay.observations.labels("events").observe(0.004)
    first = relay.take()
    assert first is not None
    worker.batches_received_total.labels("app").inc(2)
    second = relay.take()
    assert second is not None
    assert relay.take() is None, "nothing new, nothing sent"

    engine = Metrics()
    hub = object.__new__(WorkerHub)  # only the counting part, no processes
    hub.metrics = engine
    hub._counters = WorkerHub._counter_index(engine)
    for stats in (first, second):
        hub._count(stats)
    assert engine.batches_received_total.labels("app")._value.get() == 5
    assert engine.requests_rejected_total.labels("-", "unauthorized")._value.get() == 1
    count = [
        s.value
        for m in engine.registry.collect()
        for s in m.samples
        if s.name == "s3forward_ingest_seconds_count" and s.labels == {"endpoint": "events"}
    ]
    assert count == [1.0]


def test_the_paths_that_read_the_engines_state_are_forwarded(tmp_path: Path) -> None:
    """/readyz, /metrics, the admin reload and the status page are the engine's to answer;
    ingest is not; without the status page its paths are not forwarded either."""

    def config(status_page: bool) -> Config:
        return Config(
            inputs={"app": InputSettings("app", "k", Secret("s"), "App")},
            connections={
                "c": ConnectionSettings(
                    name="c",
                    inputs=("app",),
                    s3_bucket_name="",
                    destination=Destination.LOCALDIR,
                    local_path=tmp_path,
                    store_data_in_folders_by_date=DateFolders.NONE,
                )
            },
            server=ServerSettings(status_page=status_page),
        )

    paths = forwarded_paths(config(True))
    assert {"/readyz", "/metrics", "/admin/reload", "/", "/status.json"} <= paths
    assert "/v2/events" not in paths
    assert "/" not in forwarded_paths(config(False))


def test_a_request_waiting_on_a_lost_engine_fails_as_unavailable_never_succeeds() -> None:
    """When the socket pair closes, every request still waiting for the engine raises
    SpoolUnavailableError (503), and so does any request made afterwards."""

    async def scenario() -> None:
        lost: list[bool] = []
        client = EngineClient(lambda frame: None, lambda: lost.append(True))

        class Transport:
            def write(self, data: bytes) -> None:
                pass

            def close(self) -> None:
                pass

        client.channel.connection_made(Transport())  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(client.request(Submit(client.next_id(), "app", [], 1, [])))
        await asyncio.sleep(0)
        client.channel.connection_lost(None)
        with pytest.raises(SpoolUnavailableError):
            await waiting
        with pytest.raises(SpoolUnavailableError):
            await client.request(Submit(client.next_id(), "app", [], 1, []))
        assert lost == [True]

    asyncio.run(scenario())
