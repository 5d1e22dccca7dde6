"""Pipelined JetStream publishes: a group of messages written at once, one deadline for all acks.

nats-py's ``JetStreamContext.publish`` is one request per message: a task per message when a
request's batches are gathered, an ``asyncio.wait_for`` each, a stdlib ``json`` parse and a
``PubAck`` dataclass per ack. On two shared cores that per-message Python work was a large
part of an ingest node's CPU. ``PipelinedPublisher`` writes every message of a group into the
connection's buffer (one flush), with reply subjects on one wildcard subscription of its own,
and waits for all the acks together with a single deadline.

Nothing is weakened: a message counts as stored only when its own JetStream ack (replicated,
fsync'd with ``sync_interval: always``) has come back, and a group's caller sees every
message's outcome. A late ack is a ``TimeoutError``; an error reply the same ``APIError``
nats-py raises; no responders a ``NoStreamResponseError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

EXPECTED_STREAM = "Nats-Expected-Stream"
_STATUS = "Status"
_NO_RESPONDERS = "503"


@dataclass(frozen=True, slots=True)
class Ack:
    """JetStream's acknowledgement of one stored message."""

    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to publish: subject, payload, headers, and the stream expected to take it."""

    subject: str
    payload: bytes
    headers: dict[str, str]
    stream: str | None = None


class PipelinedPublisher:
    """Publishes groups of messages on ``nc`` and collects their acks. Event-loop only."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._sub: Subscription | None = None
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._counter = 0

    async def start(self) -> None:
        inbox = self._nc.new_inbox()
        self._prefix = inbox + "."
        self._sub = await self._nc.subscribe(inbox + ".*", cb=self._on_reply)

    async def close(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):  # the connection is closing anyway
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish_all(
        self, messages: Sequence[Outbound], *, timeout: float
    ) -> list[Ack | BaseException]:
        """Publish every message, then wait (at most ``timeout`` in all) for every ack.

        Returns one entry per message, in order: its ``Ack`` or the exception that says why it
        was not stored (or may not have been: a late ack is a ``TimeoutError``)."""
        if self._sub is None:
            await self.start()
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        futures: list[asyncio.Future[Msg]] = []
        results: list[Ack | BaseException | None] = [None] * len(messages)
        for index, message in enumerate(messages):
            self._counter += 1
            token = str(self._counter)
            future: asyncio.Future[Msg] = loop.create_future()
            self._pending[token] = future
            tokens.append(token)
            futures.append(future)
            headers = message.headers
            if message.stream is not None:
                headers = {**headers, EXPECTED_STREAM: message.stream}
            try:
                await self._nc.publish(
                    message.subject, message.payload, reply=self._prefix + token, headers=headers
                )
            except nats.errors.Error as exc:
                self._pending.pop(token, None)
                future.cancel()
                results[index] = exc
        waiting = [f for f in futures if not f.cancelled()]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        for index, (token, future) in enumerate(zip(tokens, futures, strict=True)):
            if results[index] is not None:
                continue
            if not future.done():
                self._pending.pop(token, None)
                future.cancel()
                results[index] = TimeoutError("JetStream did not acknowledge in time")
                continue
            results[index] = _ack_of(future.result())
        return [r for r in results if r is not None]


def _ack_of(msg: Msg) -> Ack | BaseException:
    if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS and not msg.data:
        return nats.js.errors.NoStreamResponseError()
    try:
        reply = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return nats.js.errors.Error(f"unreadable JetStream ack: {msg.data[:100]!r}")
    error = reply.get("error")
    if error is not None:
        try:  # nats-py's from_error raises the typed error instead of returning it
            nats.js.errors.APIError.from_error(error)
        except nats.js.errors.APIError as exc:
            return exc
        return nats.js.errors.APIError(description=str(error))
    return Ack(seq=int(reply.get("seq", 0)), duplicate=bool(reply.get("duplicate", False)))


__all__ = ["Ack", "Outbound", "PipelinedPublisher"]
