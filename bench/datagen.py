"""Realistic, deterministic mParticle Events API batches for benchmarks.

``make_batches`` simulates a population of mobile devices (iOS and Android) using one app: each
device has a stable identity (``ios_idfv`` / ``android_uuid``, ``mpid``, ``customer_id``, email),
sessions that start and end, user attributes and identities that change (with the matching
``user_attribute_change`` / ``user_identity_change`` events), and uploads batches of events the
way the SDKs do. Event types come in realistic proportions (about 40 % custom events, 25 % screen
views, 8 % commerce, then lifecycle, push, network, attribute changes; crashes are rare). Every
batch passes s3forward's validation. The same arguments always give the same batches: all
randomness comes from one ``random.Random(seed)``.

``encode_request`` / ``encode_requests`` turn batches into ``/v2/bulkevents`` bodies.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

# 2023-11-14T22:13:20Z: a fixed start, so the data (and its date folders) never depend on today.
START_MS = 1_700_000_000_000
# Mean gap between two uploads from the whole population (about 20 batches per second).
MEAN_UPLOAD_GAP_MS = 50.0
# The mobile SDKs' default session timeout.
SESSION_TIMEOUT_MS = 60_000 * 30
# Chance that an upload is the one that ends its session (session_end is its last event).
SESSION_END_CHANCE = 0.18

# Weights of the events that fill a batch between the lifecycle events. With session_start /
# session_end added by the session model, the overall mix lands near custom 40 %, screen 25 %,
# commerce 8 %.
BODY_EVENT_WEIGHTS: dict[str, float] = {
    "custom_event": 44.0,
    "screen_view": 27.5,
    "commerce_event": 8.8,
    "breadcrumb": 4.0,
    "network_performance": 4.0,
    "user_attribute_change": 3.0,
    "application_state_transition": 3.0,
    "push_message": 2.5,
    "user_identity_change": 1.0,
    "push_registration": 0.5,
    "crash_report": 0.3,
    "opt_out": 0.1,
}

CUSTOM_EVENTS: tuple[tuple[str, str], ...] = (
    ("Button Clicked", "navigation"),
    ("Tab Selected", "navigation"),
    ("Search Performed", "search"),
    ("Item Favorited", "user_preference"),
    ("Settings Changed", "user_preference"),
    ("Video Played", "media"),
    ("Video Paused", "media"),
    ("Article Shared", "social"),
    ("Review Posted", "user_content"),
    ("Coupon Applied", "transaction"),
    ("Onboarding Step", "other"),
    ("Notification Opened", "other"),
)
SCREENS: tuple[str, ...] = (
    "Home",
    "Search",
    "Search Results",
    "Product Detail",
    "Cart",
    "Checkout",
    "Order Confirmation",
    "Account",
    "Settings",
    "Favorites",
    "Onboarding",
    "Help",
)
PRODUCTS: tuple[tuple[str, str, str, float], ...] = (
    ("sku-1001", "Trail Running Shoe", "Footwear", 89.99),
    ("sku-1002", "Merino Wool Socks", "Accessories", 14.5),
    ("sku-1003", "Insulated Water Bottle", "Outdoor", 24.0),
    ("sku-1004", "Packable Rain Jacket", "Apparel", 129.0),
    ("sku-1005", "Headlamp 400lm", "Outdoor", 39.95),
    ("sku-1006", "Compression Tights", "Apparel", 59.0),
    ("sku-1007", "Daypack 22L", "Bags", 74.99),
    ("sku-1008", "Energy Gel 12-pack", "Nutrition", 18.0),
)
PRODUCT_ACTIONS = ("view_detail", "add_to_cart", "remove_from_cart", "checkout", "purchase")
PRODUCT_ACTION_WEIGHTS = (45.0, 25.0, 6.0, 12.0, 12.0)
ENDPOINTS = ("/v1/catalog", "/v1/search", "/v1/cart", "/v1/user/profile", "/v1/recommendations")
CRASH_CLASSES = ("NSInvalidArgumentException", "java.lang.NullPointerException", "SIGABRT")
BREADCRUMBS = ("viewDidAppear", "fetchCatalog", "renderList", "tapCheckout", "paymentSheet")
ATTRIBUTE_CHANGES: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("plan", ("free", "trial", "plus", "pro")),
    ("favorite_sport", ("running", "hiking", "cycling", "climbing")),
    ("newsletter", ("weekly", "monthly", "none")),
    ("loyalty_points", (0, 120, 450, 980, 2300)),
)

IOS_MODELS = ("iPhone14,5", "iPhone15,2", "iPhone15,3", "iPhone16,1", "iPad13,18")
IOS_VERSIONS = ("16.7.2", "17.1.1", "17.2", "17.3.1")
ANDROID_MODELS = (
    ("samsung", "SM-S911B"),
    ("samsung", "SM-A546B"),
    ("Google", "Pixel 7"),
    ("Google", "Pixel 8 Pro"),
    ("Xiaomi", "2201117TY"),
)
ANDROID_VERSIONS = ("12", "13", "14")
LOCALES = (("en", "US", -5), ("en", "GB", 0), ("de", "DE", 1), ("fr", "FR", 1), ("ja", "JP", 9))
CARRIERS = ("Verizon", "T-Mobile", "Vodafone", "Orange", "Telekom", "NTT DOCOMO")
APP_VERSIONS = (("4.12.0", "4120"), ("4.12.1", "4121"), ("4.13.0", "4130"))
FIRST_NAMES = ("alex", "sam", "kim", "jo", "lee", "max", "ana", "li", "noa", "eli")
MAIL_DOMAINS = ("example.com", "example.org", "example.net")


def _uuid(rng: random.Random) -> str:
    """A version-4 UUID string from ``rng`` (uuid.UUID is slower and not needed here)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _int64(rng: random.Random) -> int:
    """A random signed 64-bit id, as mParticle's mpids are (often negative)."""
    return rng.getrandbits(64) - 2**63


@dataclass
class Device:
    """One app install: its stable envelope fields and its current session."""

    device_info: dict[str, Any]
    application_info: dict[str, Any]
    mpid: int
    user_identities: dict[str, str]
    user_attributes: dict[str, Any]
    consent_state: dict[str, Any] | None
    location: dict[str, Any] | None
    ip: str
    session_uuid: str | None = None
    message_ids: bool = True
    session_start_ms: int = 0
    session_number: int = 0
    last_ms: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


def _ios_info(rng: random.Random) -> dict[str, Any]:
    model = rng.choice(IOS_MODELS)
    limited = rng.random() < 0.25  # ATT denied: the IDFA is all zeros
    return {
        "platform": "iOS",
        "device_manufacturer": "Apple",
        "device_model": model,
        "os_version": rng.choice(IOS_VERSIONS),
        "ios_idfv": _uuid(rng).upper(),
        "ios_advertising_id": (
            "00000000-0000-0000-0000-000000000000" if limited else _uuid(rng).upper()
        ),
        "att_authorization_status": "denied" if limited else "authorized",
        "limit_ad_tracking": limited,
        "is_tablet": model.startswith("iPad"),
    }


def _android_info(rng: random.Random) -> dict[str, Any]:
    brand, model = rng.choice(ANDROID_MODELS)
    return {
        "platform": "Android",
        "brand": brand,
        "device_manufacturer": brand,
        "device_model": model,
        "os_version": rng.choice(ANDROID_VERSIONS),
        "android_uuid": f"{rng.getrandbits(64):016x}",
        "android_advertising_id": _uuid(rng),
        "build_identifier": f"UP1A.{rng.randrange(230000, 240000)}.{rng.randrange(1, 99):03d}",
        "limit_ad_tracking": rng.random() < 0.1,
        "is_tablet": False,
    }


def _consent_state(rng: random.Random, now_ms: int) -> dict[str, Any]:
    def purpose(consented: bool) -> dict[str, Any]:
        return {
            "consented": consented,
            "document": "privacy_policy_v3",
            "timestamp_unixtime_ms": now_ms - rng.randrange(86_400_000, 90 * 86_400_000),
            "location": "in-app banner",
        }

    return {
        "gdpr": {"analytics": purpose(True), "marketing": purpose(rng.random() < 0.4)},
        "ccpa": {"data_sale_opt_out": purpose(rng.random() < 0.2)},
    }


def make_device(rng: random.Random, now_ms: int) -> Device:
    """A new device with its platform, locale, user and optional consent and location."""
    ios = rng.random() < 0.55
    info = _ios_info(rng) if ios else _android_info(rng)
    language, country, tz = rng.choice(LOCALES)
    info.update(
        locale_language=language,
        locale_country=country,
        device_country=country,
        timezone_offset=tz,
        network_carrier=rng.choice(CARRIERS),
        radio_access_technology=rng.choice(("LTE", "5G", "WiFi")),
    )
    version, build = rng.choice(APP_VERSIONS)
    app = {
        "application_name": "TrailMix",
        "application_version": version,
        "application_build_number": build,
        "package": "com.example.trailmix",
        "os": "IOS" if ios else "Android",
    }
    identities: dict[str, str] = {}
    if rng.random() < 0.7:  # logged-in users
        name = f"{rng.choice(FIRST_NAMES)}.{rng.randrange(10_000)}"
        identities["customer_id"] = f"cust-{rng.randrange(10**8):08d}"
        identities["email"] = f"{name}@{rng.choice(MAIL_DOMAINS)}"
    attributes: dict[str, Any] = {
        "$country": country,
        "plan": rng.choice(("free", "trial", "plus")),
        "signup_channel": rng.choice(("organic", "paid_social", "referral")),
    }
    if rng.random() < 0.5:
        attributes["$age"] = rng.randrange(18, 70)
        attributes["interests"] = rng.sample(["running", "hiking", "cycling", "climbing"], 2)
    location = None
    if rng.random() < 0.3:  # location permission granted
        location = {
            "latitude": round(rng.uniform(-60, 70), 6),
            "longitude": round(rng.uniform(-170, 170), 6),
            "accuracy": float(rng.choice((5, 10, 35, 65))),
        }
    return Device(
        device_info=info,
        application_info=app,
        mpid=_int64(rng),
        user_identities=identities,
        user_attributes=attributes,
        consent_state=_consent_state(rng, now_ms) if rng.random() < 0.3 else None,
        location=location,
        # Client SDKs set source_message_id; many server-to-server senders do not.
        message_ids=rng.random() < 0.6,
        ip=f"{rng.choice(('203.0.113', '198.51.100', '192.0.2'))}.{rng.randrange(1, 255)}",
    )


# --------------------------------------------------------------------------------------------
# Events


def _common(device: Device, ts: int, rng: random.Random) -> dict[str, Any]:
    data: dict[str, Any] = {"timestamp_unixtime_ms": ts}
    if device.message_ids:
        data["source_message_id"] = _uuid(rng)
    data["session_uuid"] = device.session_uuid
    if device.location is not None and rng.random() < 0.5:
        data["location"] = device.location
    return data


_ATTRIBUTE_KEYS = ["ab_group", "position", "source"]


def _attributes(rng: random.Random, **fixed: Any) -> dict[str, Any]:
    extra = {
        "source": rng.choice(("home_feed", "push", "deeplink", "search")),
        "ab_group": rng.choice(("control", "variant_a", "variant_b")),
        "position": str(rng.randrange(1, 25)),
    }
    keys = rng.sample(_ATTRIBUTE_KEYS, rng.choice((0, 1, 1, 2)))
    return {**fixed, **{k: extra[k] for k in keys}}


def _custom_event(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    name, kind = rng.choice(CUSTOM_EVENTS)
    data["event_name"] = name
    data["custom_event_type"] = kind
    screen = {"screen": rng.choice(SCREENS)} if rng.random() < 0.5 else {}
    data["custom_attributes"] = _attributes(rng, **screen)
    if rng.random() < 0.1:
        data["custom_flags"] = {"Google.Category": kind, "Google.Label": name}


def _screen_view(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    data["screen_name"] = rng.choice(SCREENS)
    if device.device_info["platform"] == "Android":
        data["activity_type"] = "activity_started"
    if rng.random() < 0.4:
        data["custom_attributes"] = _attributes(rng)


def _product(rng: random.Random) -> dict[str, Any]:
    sku, name, category, price = rng.choice(PRODUCTS)
    return {
        "id": sku,
        "name": name,
        "brand": "TrailMix",
        "category": category,
        "price": price,
        "quantity": rng.choice((1, 1, 1, 2, 3)),
        "variant": rng.choice(("S", "M", "L", "XL", "one size")),
    }


def _commerce_event(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    action = rng.choices(PRODUCT_ACTIONS, PRODUCT_ACTION_WEIGHTS)[0]
    products = [_product(rng) for _ in range(rng.randrange(1, 4))]
    product_action: dict[str, Any] = {"action": action, "products": products}
    if action == "purchase":
        total = round(sum(p["price"] * p["quantity"] for p in products), 2)
        product_action.update(
            transaction_id=f"T{rng.randrange(10**9):09d}",
            total_amount=total,
            tax_amount=round(total * 0.08, 2),
            shipping_amount=rng.choice((0.0, 4.99, 9.99)),
        )
    data["product_action"] = product_action
    data["currency_code"] = "USD"
    data["event_name"] = f"eCommerce - {action}"
    data["custom_event_type"] = action
    if rng.random() < 0.3:
        data["custom_attributes"] = _attributes(rng)


def _breadcrumb(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    data["label"] = rng.choice(BREADCRUMBS)
    data["session_number"] = device.session_number


def _network_performance(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    data.update(
        http_verb=rng.choice(("GET", "GET", "GET", "POST")),
        url=f"https://api.example.com{rng.choice(ENDPOINTS)}?page={rng.randrange(1, 9)}",
        time_elapsed=rng.randrange(40, 2500),
        bytes_in=rng.randrange(200, 80_000),
        bytes_out=rng.randrange(100, 2_000),
        response_code=rng.choice((200, 200, 200, 200, 304, 404, 500)),
    )


def _user_attribute_change(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    name, values = rng.choice(ATTRIBUTE_CHANGES)
    old = device.user_attributes.get(name)
    new = rng.choice([v for v in values if v != old])
    device.user_attributes[name] = new
    data.update(
        user_attribute_name=name,
        new=new,
        old=old,
        deleted=False,
        is_new_attribute=old is None,
    )


def _user_identity_change(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    email = f"{rng.choice(FIRST_NAMES)}.{rng.randrange(10_000)}@{rng.choice(MAIL_DOMAINS)}"
    old = device.user_identities.get("email")
    device.user_identities["email"] = email
    ts = data["timestamp_unixtime_ms"]
    data["new"] = {
        "identity_type": "email",
        "identity": email,
        "timestamp_unixtime_ms": ts,
        "created_this_batch": True,
    }
    data["old"] = (
        None
        if old is None
        else {
            "identity_type": "email",
            "identity": old,
            "timestamp_unixtime_ms": device.session_start_ms,
            "created_this_batch": False,
        }
    )


def _application_state_transition(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    data["application_transition_type"] = rng.choice(
        ("application_background", "application_foreground")
    )
    data["successfully_closed"] = True


def _push_message(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    ios = device.device_info["platform"] == "iOS"
    payload = {"aps": {"alert": {"title": "Back in stock", "body": "Your favourite is back"}}}
    data.update(
        push_message_token=f"{rng.getrandbits(256):064x}",
        push_message_type=rng.choice(("received", "action")),
        push_notification_payload=orjson.dumps(payload).decode(),
        network="apn" if ios else "gcm",
        application_state=rng.choice(("background", "foreground", "not_running")),
    )


def _push_registration(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    data["register"] = True
    data["registration_token"] = f"{rng.getrandbits(256):064x}"


def _crash_report(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    cls = rng.choice(CRASH_CLASSES)
    frames = "\n".join(
        f"{i} TrailMix 0x{rng.getrandbits(40):010x} {rng.choice(BREADCRUMBS)}"
        f" + {rng.randrange(999)}"
        for i in range(rng.randrange(8, 20))
    )
    data.update(
        class_name=cls,
        severity="fatal",
        message=f"{cls}: unexpected nil while unwrapping an Optional value",
        stack_trace=frames,
        exception_handled=False,
        topmost_context=rng.choice(SCREENS),
        session_number=device.session_number,
    )


def _opt_out(device: Device, data: dict[str, Any], rng: random.Random) -> None:
    data["is_opted_out"] = rng.random() < 0.5


FILLERS = {
    "custom_event": _custom_event,
    "screen_view": _screen_view,
    "commerce_event": _commerce_event,
    "breadcrumb": _breadcrumb,
    "network_performance": _network_performance,
    "user_attribute_change": _user_attribute_change,
    "application_state_transition": _application_state_transition,
    "push_message": _push_message,
    "user_identity_change": _user_identity_change,
    "push_registration": _push_registration,
    "crash_report": _crash_report,
    "opt_out": _opt_out,
}
_BODY_TYPES = tuple(BODY_EVENT_WEIGHTS)
_BODY_CUM = tuple(itertools.accumulate(BODY_EVENT_WEIGHTS.values()))


def _event(device: Device, event_type: str, ts: int, rng: random.Random) -> dict[str, Any]:
    data = _common(device, ts, rng)
    if event_type in FILLERS:
        FILLERS[event_type](device, data, rng)
    return {"data": data, "event_type": event_type}


def _start_session(device: Device, ts: int, rng: random.Random) -> list[dict[str, Any]]:
    """session_start, and application_initialized for the first session of the install."""
    device.session_uuid = _uuid(rng).upper()
    device.session_start_ms = ts
    device.session_number += 1
    events = [_event(device, "session_start", ts, rng)]
    if device.session_number == 1:
        init = _event(device, "application_state_transition", ts + 5, rng)
        del init["data"]["successfully_closed"]
        init["data"].update(
            application_transition_type="application_initialized",
            is_first_run=True,
            is_upgrade=False,
        )
        events.append(init)
    return events


def _end_session(device: Device, ts: int, rng: random.Random) -> dict[str, Any]:
    event = _event(device, "session_end", ts, rng)
    event["data"]["session_duration_ms"] = ts - device.session_start_ms
    device.session_uuid = None
    return event


def _batch_events(
    device: Device, upload_ms: int, count: int, rng: random.Random
) -> list[dict[str, Any]]:
    """``count`` events (give or take the lifecycle ones) that happened before ``upload_ms``."""
    ends = rng.random() < SESSION_END_CHANCE
    end_gap = rng.randrange(1_000, 5_000) if ends else 0
    gaps = [rng.randrange(800, 30_000) for _ in range(count)]
    first = device.last_ms + 100
    room = upload_ms - 200 - end_gap - first
    if sum(gaps) > room:  # an active device uploads again soon: squeeze its events in
        gaps = [max(1, g * max(room, 0) // sum(gaps)) for g in gaps]
    ts = max(first, upload_ms - 200 - end_gap - sum(gaps))
    events: list[dict[str, Any]] = []
    if device.session_uuid is None or ts - device.last_ms > SESSION_TIMEOUT_MS:
        events += _start_session(device, ts, rng)
    body = max(1, count - len(events) - (1 if ends else 0))
    kinds = rng.choices(_BODY_TYPES, cum_weights=_BODY_CUM, k=body)
    for event_type, gap in zip(kinds, gaps, strict=False):
        ts += gap
        events.append(_event(device, event_type, ts, rng))
    if ends:
        ts += end_gap
        events.append(_end_session(device, ts, rng))
    device.last_ms = ts
    return events


def make_batch(
    device: Device, upload_ms: int, events_per_batch: int, rng: random.Random
) -> dict[str, Any]:
    """One upload from ``device`` at ``upload_ms``, with about ``events_per_batch`` events."""
    count = max(1, round(rng.triangular(0.5, 1.5) * events_per_batch))
    events = _batch_events(device, upload_ms, count, rng)
    # A device that uploads again within a second stamps its batch after its last event.
    upload_ms = max(upload_ms, device.last_ms + 50)
    batch: dict[str, Any] = {
        "events": events,
        "source_request_id": _uuid(rng),
        "environment": "production" if rng.random() < 0.97 else "development",
        "ip": device.ip,
        "device_info": device.device_info,
        "application_info": device.application_info,
        "user_attributes": dict(device.user_attributes),
        "mpid": device.mpid,
        "sdk_version": "8.19.0" if device.device_info["platform"] == "iOS" else "5.55.0",
        "timestamp_unixtime_ms": upload_ms,
    }
    if device.user_identities:
        batch["user_identities"] = dict(device.user_identities)
    if device.consent_state is not None:
        batch["consent_state"] = device.consent_state
    return batch


def iter_batches(
    n: int, *, seed: int = 1, events_per_batch: int = 10, devices: int = 1000
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` batches in upload order; see ``make_batches``."""
    if n < 0 or events_per_batch < 1 or devices < 1:
        raise ValueError("need n >= 0, events_per_batch >= 1 and devices >= 1")
    rng = random.Random(seed)
    now = START_MS
    population = [make_device(rng, now) for _ in range(devices)]
    # Some users are much more active than others: a long-tailed activity weight per device,
    # capped so that no device uploads more than a few times a minute.
    activity = itertools.accumulate(min(rng.paretovariate(1.5), 10.0) for _ in population)
    cum_activity = list(activity)
    for _ in range(n):
        now += max(1, round(rng.expovariate(1 / MEAN_UPLOAD_GAP_MS)))
        device = rng.choices(population, cum_weights=cum_activity)[0]
        # Copies of shared sub-objects, so that mutating one batch never changes another.
        yield orjson.loads(orjson.dumps(make_batch(device, now, events_per_batch, rng)))


def make_batches(
    n: int, *, seed: int = 1, events_per_batch: int = 10, devices: int = 1000
) -> list[dict[str, Any]]:
    """``n`` realistic batches from ``devices`` devices, about ``events_per_batch`` events each.

    Batches are independent plain dicts (no shared sub-objects), about 4 KB of JSON each on
    average (5th-95th percentile 2.9-5.6 KB) at the default 10 events, and identical for
    identical arguments. Location appears on the events of devices that allow it (about 30 %),
    consent_state on about 30 % of devices, user_identities for logged-in users (about 70 %).
    """
    return list(iter_batches(n, seed=seed, events_per_batch=events_per_batch, devices=devices))


def encode_request(batches: Sequence[dict[str, Any]]) -> bytes:
    """A ``/v2/bulkevents`` body: the batches as one compact JSON array."""
    return orjson.dumps(list(batches))


def chunks(batches: Sequence[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """``batches`` cut into consecutive groups of at most ``size``."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [list(batches[i : i + size]) for i in range(0, len(batches), size)]


def encode_requests(batches: Sequence[dict[str, Any]], per_request: int = 50) -> list[bytes]:
    """Bulk request bodies of ``per_request`` batches each (the last one may be shorter)."""
    return [encode_request(group) for group in chunks(batches, per_request)]
