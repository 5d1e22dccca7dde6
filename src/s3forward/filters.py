"""A connection's settings applied to one batch (the product spec's "Filters" table).

``apply_filters`` is pure: it never mutates its input and copies only what it changes (shallow
copies), because it runs once per batch per connection on the ingest path.
"""

from __future__ import annotations

from typing import Any

from s3forward.config import BuildRules, MetadataField

# event_type -> the connection setting that must be on for it to be sent. Types not listed
# (opt_out, breadcrumb, uninstall, pre_attribution) always pass.
EVENT_TYPE_SETTINGS: dict[str, str] = {
    "session_start": "send_lifecycle_events",
    "session_end": "send_lifecycle_events",
    "application_state_transition": "send_lifecycle_events",
    "first_run": "send_lifecycle_events",
    "screen_view": "send_screen_views",
    "crash_report": "send_crash_events",
    "network_performance": "send_network_performance_events",
    "custom_event": "send_custom_events",
    "push_registration": "send_push_registrations_and_receipts",
    "push_message": "send_push_registrations_and_receipts",
    "push_reaction": "send_push_registrations_and_receipts",
    "commerce_event": "send_commerce_events",
    "profile": "send_profile_change_events",
    "user_attribute_change": "include_user_attribute_change_events",
    "user_identity_change": "include_user_identity_change_events",
}

IDENTITY_FIELDS = ("user_identities", "partner_identities")
METADATA_FIELDS = ("application_info", "device_info", "source_info")


_SETTING_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    name: tuple(t for t, setting in EVENT_TYPE_SETTINGS.items() if setting == name)
    for name in dict.fromkeys(EVENT_TYPE_SETTINGS.values())
}


_BLOCKED: dict[int, tuple[BuildRules, frozenset[str]]] = {}


def blocked_event_types(settings: BuildRules) -> frozenset[str]:
    """The event types this connection drops (worked out once per settings object)."""
    cached = _BLOCKED.get(id(settings))
    if cached is not None and cached[0] is settings:
        return cached[1]
    if len(_BLOCKED) > 1000:  # settings objects come and go in tests; keep the cache small
        _BLOCKED.clear()
    blocked_types = _blocked_event_types(settings)
    _BLOCKED[id(settings)] = (settings, blocked_types)
    return blocked_types


def _blocked_event_types(settings: BuildRules) -> frozenset[str]:
    blocked: list[str] = []
    for name, event_types in _SETTING_EVENT_TYPES.items():
        if not getattr(settings, name):
            blocked.extend(event_types)
    return frozenset(blocked)


def apply_filters(batch: dict[str, Any], settings: BuildRules) -> dict[str, Any]:
    """Return ``batch`` as this connection forwards it. The input is never mutated.

    A batch whose events are all filtered out is still returned, with ``"events": []``.
    """
    out = dict(batch)
    events = batch.get("events")
    if type(events) is list:
        out["events"] = _filter_events(events, settings)
    _apply_batch_location(out, events if type(events) is list else [], settings)
    if not settings.include_user_identities:
        for name in IDENTITY_FIELDS:
            out.pop(name, None)
    if not settings.include_consent_state:
        out.pop("consent_state", None)
    if not settings.include_metadata:
        _remove_metadata(out)
    # Issue 11: Include MP DeviceId (off by default) and Metadata Field Exclusion.
    if not settings.include_mp_deviceid:
        out.pop("mp_deviceid", None)
    if settings.metadata_field_exclusion:
        _exclude_metadata_fields(out, settings.metadata_field_exclusion)
    return out


def _exclude_metadata_fields(out: dict[str, Any], excluded: tuple[MetadataField, ...]) -> None:
    """Device Name is ``device_info.device``; IP Address is the batch's ``ip``."""
    if MetadataField.IP_ADDRESS in excluded:
        out.pop("ip", None)
    device_info = out.get("device_info")
    if (
        MetadataField.DEVICE_NAME in excluded
        and type(device_info) is dict
        and "device" in device_info
    ):
        out["device_info"] = {k: v for k, v in device_info.items() if k != "device"}


def _filter_events(events: list[Any], settings: BuildRules) -> list[Any]:
    blocked = blocked_event_types(settings)
    if not settings.include_location_information:
        return [
            _without_event_location(e)
            for e in events
            if type(e) is not dict or e.get("event_type") not in blocked
        ]
    return [e for e in events if type(e) is not dict or e.get("event_type") not in blocked]


def _without_event_location(event: Any) -> Any:
    data = event.get("data") if type(event) is dict else None
    if type(data) is not dict or "location" not in data:
        return event
    data = dict(data)
    del data["location"]
    return {**event, "data": data}


def _apply_batch_location(out: dict[str, Any], events: list[Any], settings: BuildRules) -> None:
    """Remove ``context.location`` (setting off) or fill it from the events (setting on).

    The location is taken from the inbound events, before event filters, since it describes
    the batch; an emptied context is dropped.
    """
    context = out.get("context")
    if not settings.include_event_batch_location:
        if type(context) is dict and "location" in context:
            context = {k: v for k, v in context.items() if k != "location"}
            if context:
                out["context"] = context
            else:
                del out["context"]
        return
    if type(context) is dict and context.get("location") is not None:
        return
    location = first_valid_location(events)
    if location is not None:
        out["context"] = {**(context if type(context) is dict else {}), "location": location}


def first_valid_location(events: list[Any]) -> dict[str, Any] | None:
    """The first event ``data.location`` with numeric latitude in [-90, 90] and longitude in
    [-180, 180]; None when no event has one."""
    for event in events:
        data = event.get("data") if type(event) is dict else None
        location = data.get("location") if type(data) is dict else None
        if (
            type(location) is dict
            and _is_coordinate(location.get("latitude"), 90)
            and _is_coordinate(location.get("longitude"), 180)
        ):
            return location
    return None


def _is_coordinate(value: Any, bound: int) -> bool:
    return type(value) in (int, float) and -bound <= value <= bound


def _remove_metadata(out: dict[str, Any]) -> None:
    application_info = out.get("application_info")
    for name in METADATA_FIELDS:
        out.pop(name, None)
    # The app's bundle id / package name is forwarded regardless (seed: Unique ID setting).
    if type(application_info) is dict and application_info.get("package") is not None:
        out["application_info"] = {"package": application_info["package"]}
