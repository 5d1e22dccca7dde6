"""A stateless ingest node: the ``Intake`` that publishes each batch to JetStream.

Each batch becomes one message on its partition's subject (crc32 of input and device key), with
a deterministic ``Nats-Msg-Id``, so a client's retry within the stream's ``duplicate_window``
is stored once. ``submit`` returns only after every batch of the request has JetStream's
replicated ack (fsync'd with ``sync_interval: always``); the API answers 202 after that.

A bulk request's batches are published pipelined (``publish.PipelinedPublisher``: all written
at once, one deadline for all the acks); if any publish fails,
the request fails (503/429) and the client's retry publishes every batch again: the ones that
were stored dedup on their message id, the others are stored now. So from the client's view the
request is all-or-nothing.

The message id is derived from the batch's ``source_request_id`` (an alias request's
``request_id``, as in single-node mode: ``mparticle.dedup_key``) when it has one, else from its
exact bytes. The 7-day ``source_request_id`` promise is kept by the workers (request KV bucket,
``worker.py``), not here: JetStream's own dedup only spans ``duplicate_window``.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client

from s3forward.cluster.connection import ClusterError, connect, publish_error
from s3forward.cluster.naming import ClusterNames, partition_of
from s3forward.cluster.publish import Ack, Outbound, PipelinedPublisher
from s3forward.config import ClusterSettings, Config
from s3forward.errors import SpoolUnavailableError, StoppingError
from s3forward.intake import SubmitResult
from s3forward.mparticle import batch_id_for, dedup_key, device_key
from s3forward.mparticle.parse import ValidatedBatches

HEADER_INPUT = "S3F-Input"
HEADER_RECEIVED_MS = "S3F-Received-Ms"
HEADER_BATCH_ID = "S3F-Batch-Id"
HEADER_REQUEST_ID = "S3F-Request-Id"
HEADER_TICK = "S3F-Tick"
MSG_ID = "Nats-Msg-Id"


def message_id(input_name: str, batch: dict[str, Any], body: bytes) -> str:
    """The batch's deterministic JetStream message id."""
    request_id = dedup_key(batch)
    if request_id is not None:
        seed = f"r\x1f{input_name}\x1f{request_id}".encode()
    else:
        seed = b"b\x1f" + input_name.encode() + b"\x1f" + body
    return hashlib.sha256(seed).hexdigest()[:40]


class JetStreamIntake:
    """``Intake`` of an ingest node. ``start`` connects (on the serving event loop)."""

    def __init__(self, config: Config, cluster: ClusterSettings) -> None:
        self.config = config
        self.cluster = cluster
        self.names = ClusterNames.of(cluster)
        self._nc: Client | None = None
        self._publisher: PipelinedPublisher | None = None
        self._stopping = False
        self._rng = random.Random()

    async def start(self) -> None:
        self._nc = await connect(self.cluster, name="s3forward-ingest")
        self._publisher = PipelinedPublisher(self._nc)
        await self._publisher.start()

    def stop_intake(self) -> None:
        self._stopping = True

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    @property
    def connection(self) -> Client | None:
        return self._nc

    def ready(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "shutting down"
        if self._nc is None or not self._nc.is_connected:
            return False, "not connected to NATS"
        return True, "ok"

    async def submit(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        if self._stopping:
            raise StoppingError("s3forward is shutting down and takes no new data")
        if input_name not in self.config.inputs:
            raise ValueError(f"unknown input {input_name!r}")
        nc, publisher = self._nc, self._publisher
        if nc is None or publisher is None or not nc.is_connected:
            raise SpoolUnavailableError("not connected to NATS; retry later")
        if isinstance(batches, ValidatedBatches) and len(batches.encoded) == len(batches):
            bodies = batches.encoded
        else:
            bodies = [orjson.dumps(b) for b in batches]
        received_ms = str(int(received_at * 1000))
        messages = []
        partitions = self.names.partitions
        for batch, body in zip(batches, bodies, strict=True):
            partition = partition_of(input_name, device_key(batch), partitions)
            headers = {
                MSG_ID: message_id(input_name, batch, body),
                HEADER_INPUT: input_name,
                HEADER_RECEIVED_MS: received_ms,
                HEADER_BATCH_ID: str(batch_id_for(batch, self._rng)),
            }
            request_id = dedup_key(batch)
            if request_id is not None:  # the workers keep the 7-day dedup promise with it
                headers[HEADER_REQUEST_ID] = request_id
            messages.append(
                Outbound(
                    self.names.data_subject(partition),
                    body,
                    headers,
                    self.names.data_stream(partition),
                )
            )
        results = await publisher.publish_all(messages, timeout=self.cluster.ack_timeout)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for failure in failures:
                if not isinstance(failure, nats.errors.Error | TimeoutError | ClusterError):
                    raise failure
            raise publish_error(failures[0], retry_after=self.config.spool.retry_after)
        duplicates = sum(1 for r in results if isinstance(r, Ack) and r.duplicate)
        return SubmitResult(stored=len(results) - duplicates, duplicates=duplicates)


__all__ = ["JetStreamIntake", "message_id"]
