"""MemorySink: an in-memory ``Sink`` with scripted faults, for tests (ships in the package).

Like httpx's ``MockTransport``: the pipeline runs unchanged, the bucket is a dict, and a test
says what the next writes do. ``fail_next(error, times)`` makes the next writes raise ``error``
(e.g. ``TransientSinkError("slow down", code="SlowDown")``); ``land_then_fail`` stores the
object and then raises, as a write whose answer was lost does; ``take(key, body)`` puts a
foreign object on a key. It keeps the ``Sink`` contract: never overwrites, recognises its own
earlier object by sha256, thread-safe.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from dataclasses import dataclass, field

from s3forward.errors import KeyTakenError, SinkError
from s3forward.layout import EncodedObject
from s3forward.sinks.base import WriteOutcome


@dataclass(slots=True)
class _Fault:
    error: SinkError
    land_first: bool = False


@dataclass(slots=True)
class MemorySink:
    """A bucket in a dict: key -> (body, sha256)."""

    name: str = "memory"
    objects: dict[str, bytes] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)
    """Every key written to, in order, including failed attempts."""
    closed: bool = False
    _digests: dict[str, str] = field(default_factory=dict)
    _faults: deque[_Fault] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, error: SinkError, times: int = 1) -> None:
        """The next ``times`` writes raise ``error`` without storing anything."""
        with self._lock:
            self._faults.extend(_Fault(error) for _ in range(times))

    def land_then_fail(self, error: SinkError) -> None:
        """The next write stores its object and then raises ``error`` (a lost answer)."""
        with self._lock:
            self._faults.append(_Fault(error, land_first=True))

    def take(self, key: str, body: bytes) -> None:
        """Put a foreign object on ``key`` (one s3forward did not write)."""
        with self._lock:
            self.objects[key] = body
            self._digests[key] = hashlib.sha256(body).hexdigest() + "-foreign"

    def write(self, obj: EncodedObject) -> WriteOutcome:
        with self._lock:
            self.attempts.append(obj.key)
            fault = self._faults.popleft() if self._faults else None
            if fault is not None and not fault.land_first:
                raise fault.error
            outcome = self._store(obj)
            if fault is not None:
                raise fault.error
            return outcome

    def _store(self, obj: EncodedObject) -> WriteOutcome:
        digest = self._digests.get(obj.key)
        if digest is None:
            self.objects[obj.key] = obj.body
            self._digests[obj.key] = obj.sha256
            return WriteOutcome.CREATED
        if digest == obj.sha256:
            return WriteOutcome.ALREADY_PRESENT
        raise KeyTakenError(obj.key)

    def close(self) -> None:
        self.closed = True
