"""Unit tests for the batching modes (s3forward.windows), with explicit times."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable

import pytest

from s3forward.config import BatchingMode, ConnectionSettings
from s3forward.windows import (
    Grouper,
    OpenWindow,
    Sealed,
    SealReason,
    Windower,
    WindowPolicy,
)

T0 = 1_700_000_000.0
MIN = 60.0

DEVICE = WindowPolicy(BatchingMode.PER_DEVICE)
SESSION = WindowPolicy(BatchingMode.PER_SESSION)
EVENT = WindowPolicy(BatchingMode.PER_EVENT)


def _reasons(sealed: Iterable[Sealed]) -> list[tuple[int, SealReason]]:
    return [(s.window_id, s.reason) for s in sealed]


# --------------------------------------------------------------------------------------------
# Policy


def test_policy_from_settings_copies_windows_caps_and_mode() -> None:
    """from_settings carries every window setting over and derives the mode from the flags."""
    settings = ConnectionSettings(
        name="c",
        inputs=("i",),
        s3_bucket_name="b",
        wait_for_complete_batch=True,
        batch_window=5.0,
        session_timeout=6.0,
        max_session_age=7.0,
        max_file_bytes=8,
        max_open_windows=9,
        max_open_bytes=10,
    )
    assert WindowPolicy.from_settings(settings) == WindowPolicy(
        BatchingMode.PER_SESSION, 5.0, 6.0, 7.0, 8, 9, 10
    )


def test_policy_from_settings_maps_send_as_batch_false_to_per_event() -> None:
    """send_as_batch = false (without wait_for_complete_batch) means one file per event."""
    settings = ConnectionSettings(name="c", inputs=("i",), s3_bucket_name="b", send_as_batch=False)
    assert WindowPolicy.from_settings(settings).mode is BatchingMode.PER_EVENT


@pytest.mark.parametrize(
    "field", ["batch_window", "session_timeout", "max_session_age", "max_file_bytes"]
)
def test_policy_rejects_zero_durations_and_sizes(field: str) -> None:
    """A zero window or size is refused with the field's name in the message."""
    with pytest.raises(ValueError, match=field):
        WindowPolicy(BatchingMode.PER_DEVICE, **{field: 0})


# --------------------------------------------------------------------------------------------
# per_device


def test_device_batches_five_minutes_apart_share_a_window() -> None:
    """Two batches of a device 5 minutes apart land in the same window."""
    w = Windower(DEVICE)
    first = w.place("dev", 100, T0)
    second = w.place("dev", 50, T0 + 5 * MIN)
    assert first.window_id == second.window_id
    assert first.sealed == second.sealed == ()
    window = w.get("dev")
    assert window is not None
    assert (window.items, window.bytes, window.opened_at) == (2, 150, T0)


def test_device_window_is_sealed_batch_window_after_it_opened() -> None:
    """due() seals a device window exactly batch_window after it opened, not before."""
    w = Windower(DEVICE)
    placed = w.place("dev", 100, T0)
    w.place("dev", 100, T0 + 9 * MIN)
    assert w.due(T0 + 10 * MIN - 0.001) == []
    sealed = w.due(T0 + 10 * MIN)
    assert _reasons(sealed) == [(placed.window_id, SealReason.WINDOW_ELAPSED)]
    assert (sealed[0].items, sealed[0].bytes, sealed[0].opened_at) == (2, 200, T0)
    assert w.open_count == 0
    assert w.open_bytes == 0


def test_device_batch_after_the_window_lands_in_a_new_window() -> None:
    """A batch 10 min 1 s after the window opened goes into a new window once due() sealed it."""
    w = Windower(DEVICE)
    first = w.place("dev", 100, T0)
    assert _reasons(w.due(T0 + 10 * MIN + 1)) == [(first.window_id, SealReason.WINDOW_ELAPSED)]
    late = w.place("dev", 100, T0 + 10 * MIN + 1)
    assert late.window_id != first.window_id
    assert late.sealed == ()
    window = w.get("dev")
    assert window is not None
    assert window.opened_at == T0 + 10 * MIN + 1


def test_place_seals_an_expired_window_even_without_due() -> None:
    """A window whose deadline passed is never extended: place() seals it before opening anew."""
    w = Windower(DEVICE)
    first = w.place("dev", 100, T0)
    late = w.place("dev", 100, T0 + 11 * MIN)
    assert late.window_id != first.window_id
    assert _reasons(late.sealed) == [(first.window_id, SealReason.WINDOW_ELAPSED)]


def test_devices_get_separate_windows() -> None:
    """Each group has its own window, sealed on its own deadline."""
    w = Windower(DEVICE)
    a = w.place("a", 10, T0)
    b = w.place("b", 10, T0 + 3 * MIN)
    assert a.window_id != b.window_id
    assert w.next_deadline() == T0 + 10 * MIN
    assert _reasons(w.due(T0 + 10 * MIN)) == [(a.window_id, SealReason.WINDOW_ELAPSED)]
    assert w.next_deadline() == T0 + 13 * MIN
    assert _reasons(w.due(T0 + 13 * MIN)) == [(b.window_id, SealReason.WINDOW_ELAPSED)]
    assert w.next_deadline() is None


def test_device_mode_ignores_session_end() -> None:
    """ends_session has no effect outside per_session mode."""
    w = Windower(DEVICE)
    placed = w.place("dev", 10, T0, ends_session=True)
    assert placed.sealed == ()
    assert w.open_count == 1


# --------------------------------------------------------------------------------------------
# per_session


def test_session_end_seals_the_window_with_its_last_item() -> None:
    """A session_end batch joins the session's window, which is then sealed SESSION_ENDED."""
    w = Windower(SESSION)
    first = w.place("s1", 10, T0)
    last = w.place("s1", 20, T0 + 1, ends_session=True)
    assert last.window_id == first.window_id
    assert [(s.reason, s.items, s.bytes) for s in last.sealed] == [
        (SealReason.SESSION_ENDED, 2, 30)
    ]
    assert w.open_count == 0


def test_session_is_sealed_after_timeout_without_activity() -> None:
    """A session idle for session_timeout is sealed SESSION_IDLE; activity pushes that out."""
    w = Windower(SESSION)
    placed = w.place("s1", 10, T0)
    w.place("s1", 10, T0 + 20 * MIN)
    assert w.due(T0 + 30 * MIN) == []  # activity at 20 min moved the deadline to 50 min
    assert w.next_deadline() == T0 + 50 * MIN
    assert w.due(T0 + 50 * MIN - 1) == []
    assert _reasons(w.due(T0 + 50 * MIN)) == [(placed.window_id, SealReason.SESSION_IDLE)]


def test_session_is_sealed_at_max_age_even_with_activity() -> None:
    """A session active every 10 minutes is still sealed SESSION_MAX_AGE at max_session_age."""
    policy = WindowPolicy(BatchingMode.PER_SESSION, session_timeout=30 * MIN, max_session_age=3600)
    w = Windower(policy)
    placed = w.place("s1", 10, T0)
    sealed = []
    for step in range(1, 8):
        now = T0 + step * 10 * MIN
        sealed += w.due(now)
        if not sealed:
            w.place("s1", 10, now)
    assert _reasons(sealed) == [(placed.window_id, SealReason.SESSION_MAX_AGE)]
    assert sealed[0].items == 6  # T0 plus the 10..50 min batches; the 60 min tick sealed it


def test_session_batch_after_idle_timeout_starts_a_new_window() -> None:
    """An item arriving after the idle deadline does not revive the old session window."""
    w = Windower(SESSION)
    old = w.place("s1", 10, T0)
    new = w.place("s1", 10, T0 + 31 * MIN)
    assert new.window_id != old.window_id
    assert _reasons(new.sealed) == [(old.window_id, SealReason.SESSION_IDLE)]


# --------------------------------------------------------------------------------------------
# per_event


def test_per_event_gives_every_item_its_own_sealed_window() -> None:
    """In per_event mode each item is a window of its own, sealed at once; nothing stays open."""
    w = Windower(EVENT)
    placements = [w.place("dev", 10 + i, T0) for i in range(3)]
    ids = [p.window_id for p in placements]
    assert len(set(ids)) == 3
    for p, i in zip(placements, range(3), strict=True):
        assert [(s.window_id, s.reason, s.items, s.bytes) for s in p.sealed] == [
            (p.window_id, SealReason.PER_EVENT, 1, 10 + i)
        ]
    assert w.open_count == 0
    assert w.next_deadline() is None


# --------------------------------------------------------------------------------------------
# max_file_bytes


def test_item_that_would_overflow_the_file_seals_the_window_first() -> None:
    """An item that would push a window past max_file_bytes seals it (FILE_FULL) and starts anew."""
    w = Windower(WindowPolicy(BatchingMode.PER_DEVICE, max_file_bytes=100))
    first = w.place("dev", 60, T0)
    second = w.place("dev", 50, T0 + 1)
    assert second.window_id != first.window_id
    assert [(s.window_id, s.reason, s.bytes) for s in second.sealed] == [
        (first.window_id, SealReason.FILE_FULL, 60)
    ]
    window = w.get("dev")
    assert window is not None
    assert window.bytes == 50


def test_window_that_reaches_max_file_bytes_is_sealed_at_once() -> None:
    """A window filled exactly to max_file_bytes is sealed by the placement that filled it."""
    w = Windower(WindowPolicy(BatchingMode.PER_DEVICE, max_file_bytes=100))
    w.place("dev", 60, T0)
    full = w.place("dev", 40, T0 + 1)
    assert [(s.window_id, s.reason, s.items, s.bytes) for s in full.sealed] == [
        (full.window_id, SealReason.FILE_FULL, 2, 100)
    ]
    assert w.open_count == 0


def test_item_bigger_than_max_file_bytes_gets_a_window_of_its_own() -> None:
    """An oversized item seals the window before it and is sealed alone right after."""
    w = Windower(WindowPolicy(BatchingMode.PER_SESSION, max_file_bytes=100))
    before = w.place("s", 10, T0)
    big = w.place("s", 500, T0 + 1)
    assert [(s.window_id, s.reason, s.items, s.bytes) for s in big.sealed] == [
        (before.window_id, SealReason.FILE_FULL, 1, 10),
        (big.window_id, SealReason.FILE_FULL, 1, 500),
    ]
    assert w.open_count == 0


# --------------------------------------------------------------------------------------------
# Caps


def test_too_many_windows_seals_the_oldest() -> None:
    """Opening a window beyond max_open_windows seals the oldest-opened one (TOO_MANY_WINDOWS)."""
    w = Windower(WindowPolicy(BatchingMode.PER_DEVICE, max_open_windows=2))
    a = w.place("a", 10, T0)
    w.place("b", 10, T0 + 1)
    w.place("a", 10, T0 + 2)  # activity does not make "a" younger
    c = w.place("c", 10, T0 + 3)
    assert [(s.window_id, s.reason, s.items) for s in c.sealed] == [
        (a.window_id, SealReason.TOO_MANY_WINDOWS, 2)
    ]
    assert sorted(x.group for x in w.open_windows()) == ["b", "c"]


def test_too_many_bytes_seals_oldest_until_under_the_cap() -> None:
    """Passing max_open_bytes seals oldest-opened windows until the bytes fit (TOO_MANY_BYTES)."""
    w = Windower(WindowPolicy(BatchingMode.PER_DEVICE, max_open_bytes=100))
    a = w.place("a", 40, T0)
    b = w.place("b", 40, T0 + 1)
    c = w.place("c", 90, T0 + 2)
    assert _reasons(c.sealed) == [
        (a.window_id, SealReason.TOO_MANY_BYTES),
        (b.window_id, SealReason.TOO_MANY_BYTES),
    ]
    assert (w.open_count, w.open_bytes) == (1, 90)


def test_byte_cap_may_seal_the_window_just_placed_into_when_it_is_oldest() -> None:
    """The caps seal strictly oldest-first, even when the oldest is the window just placed into."""
    w = Windower(WindowPolicy(BatchingMode.PER_DEVICE, max_open_bytes=100))
    a = w.place("a", 50, T0)
    w.place("b", 10, T0 + 1)
    again = w.place("a", 50, T0 + 2)
    assert again.window_id == a.window_id
    assert [(s.window_id, s.reason, s.items) for s in again.sealed] == [
        (a.window_id, SealReason.TOO_MANY_BYTES, 2)
    ]
    assert w.open_bytes == 10


# --------------------------------------------------------------------------------------------
# seal_all, next_deadline, restore


@pytest.mark.parametrize("reason", [SealReason.END_OF_INPUT, SealReason.DRAIN])
def test_seal_all_seals_everything_oldest_first(reason: SealReason) -> None:
    """seal_all seals every open window in opened_at order with the given reason."""
    w = Windower(DEVICE)
    w.restore(OpenWindow(7, "restored-old", T0 - 100, T0 - 100, 5, 1))
    b = w.place("b", 10, T0)
    a = w.place("a", 10, T0 + 1)
    sealed = w.seal_all(reason)
    assert [(s.window_id, s.reason) for s in sealed] == [
        (7, reason),
        (b.window_id, reason),
        (a.window_id, reason),
    ]
    assert (w.open_count, w.open_bytes, w.next_deadline(), w.due(T0 + 1e9)) == (0, 0, None, [])


def test_seal_all_defaults_to_end_of_input() -> None:
    """Without a reason, seal_all says END_OF_INPUT."""
    w = Windower(DEVICE)
    w.place("a", 1, T0)
    assert [s.reason for s in w.seal_all()] == [SealReason.END_OF_INPUT]


def test_next_deadline_is_none_when_nothing_is_open() -> None:
    """With no open window there is nothing to wake up for."""
    assert Windower(SESSION).next_deadline() is None


def test_restored_window_keeps_its_original_deadline() -> None:
    """A window restored after a restart is due at the deadline computed from its original times."""
    w = Windower(SESSION, next_id=iter(range(100, 200)).__next__)
    w.restore(OpenWindow(42, "s1", opened_at=T0, last_activity=T0 + 10 * MIN, bytes=30, items=3))
    assert (w.open_count, w.open_bytes) == (1, 30)
    assert w.next_deadline() == T0 + 40 * MIN
    joined = w.place("s1", 5, T0 + 15 * MIN)
    assert joined.window_id == 42
    sealed = w.due(T0 + 45 * MIN)
    assert [(s.window_id, s.reason, s.items, s.bytes) for s in sealed] == [
        (42, SealReason.SESSION_IDLE, 4, 35)
    ]
    assert w.place("s1", 5, T0 + 46 * MIN).window_id == 100


def test_default_ids_skip_past_restored_ids() -> None:
    """With the default counter, new windows never reuse the id of a restored window."""
    w = Windower(DEVICE)
    w.restore(OpenWindow(41, "old", T0, T0, 1, 1))
    assert w.place("new", 1, T0).window_id == 42


def test_restore_refuses_a_second_window_for_an_open_group() -> None:
    """A group has at most one open window; restoring a second one is an error."""
    w = Windower(DEVICE)
    w.place("dev", 1, T0)
    with pytest.raises(ValueError, match="already has open window"):
        w.restore(OpenWindow(99, "dev", T0, T0, 1, 1))


def test_restore_keeps_a_copy_of_the_window() -> None:
    """Mutating the object passed to restore() does not change the windower's state."""
    w = Windower(DEVICE)
    given = OpenWindow(5, "dev", T0, T0, 10, 1)
    w.restore(given)
    given.bytes = 999
    window = w.get("dev")
    assert window is not None
    assert window.bytes == 10


def test_place_rejects_a_negative_size() -> None:
    """Sizes are byte counts; a negative one is a caller bug."""
    with pytest.raises(ValueError, match="negative"):
        Windower(DEVICE).place("dev", -1, T0)


# --------------------------------------------------------------------------------------------
# Scale: 100,000 open windows


def _hundred_thousand() -> Windower:
    w = Windower(DEVICE)
    for i in range(100_000):
        w.place(f"device-{i:06d}", 1000, T0 + i * 0.001)
    return w


def test_due_with_nothing_due_touches_no_heap_entry_among_100k_windows() -> None:
    """due() and next_deadline() with nothing due pop no heap entries, however many are open."""
    w = _hundred_thousand()
    assert w.open_count == 100_000
    before = w.heap_pops
    for _ in range(100):
        assert w.due(T0 + 1) == []
        assert w.next_deadline() == T0 + 10 * MIN
    assert w.heap_pops == before


def test_due_cost_is_proportional_to_the_windows_sealed() -> None:
    """Sealing the 10 windows due among 100,000 pops about 10 heap entries, not 100,000."""
    w = _hundred_thousand()
    before = w.heap_pops
    sealed = w.due(T0 + 10 * MIN + 0.0095)
    assert len(sealed) == 10
    assert w.heap_pops - before == 10


def test_stale_heap_entries_stay_bounded() -> None:
    """Moving session deadlines and windows that come and go keep the heaps within twice the most
    windows ever open at once plus a constant."""
    w = Windower(WindowPolicy(BatchingMode.PER_SESSION, max_open_windows=50))
    peak_open = 50 + 1  # one over the cap between opening a window and sealing the oldest
    for i in range(20_000):
        now = T0 + i
        w.place(f"s{i % 200}", 10, now, ends_session=i % 7 == 0)
        w.due(now)
        assert w.heap_size <= 2 * peak_open + 64 + 1


def test_open_windows_cost_under_a_kilobyte_each() -> None:
    """Window state costs under 1 KB per open window (~420 B measured), so 100,000 devices take
    well under 100 MB; measured on 20,000 windows because tracemalloc is slow."""
    count = 20_000
    tracemalloc.start()
    try:
        w = Windower(SESSION)
        for i in range(count):
            w.place(f"device-{i:06d}", 1000, T0 + i * 0.001)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.open_count == count
    assert peak / count < 1024


# --------------------------------------------------------------------------------------------
# Grouper


def test_grouper_returns_items_per_window_in_seal_order() -> None:
    """Grouper hands back each sealed window with its items in arrival order."""
    g: Grouper[str] = Grouper(WindowPolicy(BatchingMode.PER_DEVICE, max_file_bytes=100))
    assert g.add("a", "a1", 40, T0) == []
    assert g.add("b", "b1", 40, T0 + 1) == []
    assert g.add("a", "a2", 40, T0 + 2) == []
    overflow = g.add("a", "a3", 40, T0 + 3)
    assert [(s.reason, items) for s, items in overflow] == [(SealReason.FILE_FULL, ["a1", "a2"])]
    due = g.due(T0 + 10 * MIN + 1)
    assert [(s.group, items) for s, items in due] == [("b", ["b1"])]
    finished = g.finish()
    assert [(s.group, s.reason, items) for s, items in finished] == [
        ("a", SealReason.END_OF_INPUT, ["a3"])
    ]
    assert g.finish() == []


def test_grouper_per_event_returns_each_item_at_once() -> None:
    """In per_event mode Grouper.add returns the item's own window immediately."""
    g: Grouper[int] = Grouper(EVENT)
    assert [items for _, items in g.add("d", 1, 10, T0)] == [[1]]
    assert [items for _, items in g.add("d", 2, 10, T0)] == [[2]]
    assert g.finish() == []
