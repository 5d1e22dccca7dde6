"""One end of a worker's socket pair as an asyncio protocol: frames in, frames out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from s3forward.multicore.frames import FrameBuffer, FrameError, encode

log = structlog.get_logger("s3forward.multicore")


class FrameChannel(asyncio.Protocol):
    """Calls ``on_frame`` for every frame received and ``on_lost`` once when the channel ends
    (peer gone, or bytes that are not frames). ``send`` queues one frame; a closed channel
    drops it (the peer is gone: nobody waits for it).

    Frames sent in one turn of the event loop leave in one write at its end: under load many
    requests and answers share a system call (and a wake-up of the peer)."""

    def __init__(
        self,
        frames: FrameBuffer,
        on_frame: Callable[[Any], None],
        on_lost: Callable[[Exception | None], None],
    ) -> None:
        self._frames = frames
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self._outgoing: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except FrameError as exc:
            log.error("the worker channel carried something that is not a frame", error=str(exc))
            self.close()
            return
        for frame in frames:
            self._on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self._on_lost(exc)

    def send(self, frame: Any) -> None:
        if self.closed or self._transport is None:
            return
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(encode(frame))

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and not self.closed and self._transport is not None:
            self._transport.write(b"".join(outgoing) if len(outgoing) > 1 else outgoing[0])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


__all__ = ["FrameChannel"]
