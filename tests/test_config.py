"""The configuration loader: seed defaults, refusals, ${ENV} secrets, units and error reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from s3forward.config import (
    ROLE_MODE_ACL,
    UNSELECTED_MESSAGE,
    BatchingMode,
    Config,
    ConnectionSettings,
    DateFolders,
    Destination,
    Encryption,
    Secret,
    config_from_mapping,
    describe_config,
    embedded_default,
    load_config,
)
from s3forward.errors import ConfigError

SOURCE = "test.toml"
BUCKET = "mp-forwarding-test"


def document(**connection: Any) -> dict[str, Any]:
    """A parsed TOML document: input ``web`` and connection ``x`` with ``connection`` merged."""
    conn: dict[str, Any] = {
        "inputs": ["web"],
        "s3_bucket_name": BUCKET,
        "store_data_in_folders_by_date": "none",
    }
    conn.update(connection)
    return {
        "inputs": {"web": {"api_key": "k", "api_secret": "s", "app_name": "App"}},
        "connections": {"x": {k: v for k, v in conn.items() if v is not None}},
    }


def load(env: dict[str, str] | None = None, **connection: Any) -> ConnectionSettings:
    """Connection ``x`` of ``document(**connection)``."""
    return config_from_mapping(document(**connection), source=SOURCE, env=env or {}).connections[
        "x"
    ]


def problems(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    """The problems (as printed) that ``data`` is refused with."""
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, source=SOURCE, env=env or {})
    return [str(p) for p in caught.value.problems]


# ------------------------------------------------------------------------------ defaults

# The seed's two tables: setting -> its default (None for <unset>, "None" encryption is NONE).
SEED_DEFAULTS: dict[str, Any] = {
    "access_key_id": None,
    "secret_access_key": None,
    "aws_region_endpoint": "us-east-1",
    "folder_name": "",
    "server_side_encryption_method": Encryption.NONE,
    "unique_id": None,
    "send_lifecycle_events": True,
    "send_screen_views": True,
    "send_crash_events": True,
    "send_network_performance_events": True,
    "send_custom_events": True,
    "send_push_registrations_and_receipts": True,
    "send_as_batch": True,
    "wait_for_complete_batch": False,
    "include_location_information": True,
    "include_event_batch_location": False,
    "include_user_identities": True,
    "send_profile_change_events": True,
    "send_commerce_events": True,
    "use_compression": False,
    "include_consent_state": False,
    "include_metadata": True,
    "include_user_attribute_change_events": False,
    "include_user_identity_change_events": False,
}


@pytest.mark.parametrize(("setting", "default"), SEED_DEFAULTS.items())
def test_loaded_connection_has_the_seed_default(setting: str, default: Any) -> None:
    """A setting left out of the TOML takes the seed's default value."""
    assert getattr(load(), setting) == default


def test_date_folders_default_is_unselected_in_the_settings_object() -> None:
    """The dataclass default of Store Data In Folders By Date is the seed's UNSELECTED."""
    settings = ConnectionSettings(name="x", inputs=("web",), s3_bucket_name=BUCKET)
    assert settings.store_data_in_folders_by_date is DateFolders.UNSELECTED


def test_every_seed_setting_is_accepted_under_its_snake_case_name() -> None:
    """Each seed setting name is a known key (none is reported as unknown)."""
    values: dict[str, Any] = {
        k: (not v if isinstance(v, bool) else None) for k, v in SEED_DEFAULTS.items()
    }
    values.update(
        access_key_id="AKIA",
        secret_access_key="sk",
        aws_region_endpoint="eu-west-1",
        folder_name="f",
        server_side_encryption_method="AES256",
        unique_id="u",
    )
    settings = load(**values)
    for key, value in values.items():
        got = getattr(settings, key)
        assert (got.reveal() if isinstance(got, Secret) else got) == value, key


def test_batching_mode_follows_send_as_batch_and_wait_for_complete_batch() -> None:
    """Wait for Complete Batch overrides Send as Batch; otherwise per device or per event."""
    assert load().batching_mode is BatchingMode.PER_DEVICE
    assert load(send_as_batch=False).batching_mode is BatchingMode.PER_EVENT
    assert (
        load(send_as_batch=False, wait_for_complete_batch=True).batching_mode
        is BatchingMode.PER_SESSION
    )


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("value", [None, "UNSELECTED"], ids=["left-out", "explicit"])
def test_unselected_date_folders_are_refused_with_the_seed_message(value: str | None) -> None:
    """A connection at UNSELECTED is refused with exactly the seed's message."""
    found = problems(document(store_data_in_folders_by_date=value))
    assert found == [f"{SOURCE}: connections.x.store_data_in_folders_by_date: {UNSELECTED_MESSAGE}"]
    assert UNSELECTED_MESSAGE == (
        "Store Data in Folders by Date must be set to a value other than 'UNSELECTED'."
    )


@pytest.mark.parametrize(
    "value", ["none", "event_time", "upload_time", "event_time_or_upload_time"]
)
def test_each_date_folder_mode_is_accepted(value: str) -> None:
    """The four real choices of Store Data In Folders By Date load as themselves."""
    assert load(store_data_in_folders_by_date=value).store_data_in_folders_by_date.value == value


def test_unknown_key_is_rejected_with_a_suggestion() -> None:
    """A misspelt setting is an error that names the file, connection and nearest known key."""
    found = problems(document(send_lifecycle_event=False))
    assert found == [
        f"{SOURCE}: connections.x.send_lifecycle_event: unknown setting "
        "(did you mean 'send_lifecycle_events'?)"
    ]


def test_unknown_top_level_table_is_rejected() -> None:
    """An unknown section is an error too, not silently ignored."""
    data = {**document(), "servr": {}}
    assert any("servr: unknown setting" in p for p in problems(data))


def test_missing_environment_variable_is_named_without_any_secret_value() -> None:
    """A ${NAME} that is not set names NAME; no secret value appears in the error."""
    data = document(access_key_id="${AWS_KEY_ID}", secret_access_key="${MISSING_SECRET}")
    found = problems(data, env={"AWS_KEY_ID": "AKIA-very-private-value"})
    text = "\n".join(found)
    assert "MISSING_SECRET" in text
    assert "connections.x.secret_access_key" in text
    assert "AKIA-very-private-value" not in text


def test_environment_variables_are_expanded_into_secrets_and_strings() -> None:
    """${NAME} reads the environment, also inside a longer string."""
    settings = load(
        env={"KEY": "AKIA123", "SECRET": "s3cr3t", "APP": "shop"},
        access_key_id="${KEY}",
        secret_access_key="${SECRET}",
        folder_name="exports/${APP}/raw",
    )
    assert settings.access_key_id == Secret("AKIA123")
    assert settings.secret_access_key is not None
    assert settings.secret_access_key.reveal() == "s3cr3t"
    assert settings.folder_name == "exports/shop/raw"


@pytest.mark.parametrize("value", [12345678, ["list"]], ids=["number", "list"])
def test_mistyped_secret_is_refused_without_echoing_it(value: Any) -> None:
    """A secret given as a non-string is an error that does not print the value."""
    found = problems(document(access_key_id="AKIA", secret_access_key=value))
    text = "\n".join(found)
    assert "connections.x.secret_access_key" in text
    assert "12345678" not in text


def test_mistyped_api_secret_is_refused_without_echoing_it() -> None:
    """An input's api_secret given as a number is refused without printing it."""
    data = document()
    data["inputs"]["web"]["api_secret"] = 987654321
    text = "\n".join(problems(data))
    assert "inputs.web.api_secret" in text
    assert "987654321" not in text


@pytest.mark.parametrize(
    ("given", "missing"),
    [("access_key_id", "secret_access_key"), ("secret_access_key", "access_key_id")],
)
def test_only_one_access_key_setting_is_an_error(given: str, missing: str) -> None:
    """Setting only one of access_key_id / secret_access_key names the missing one."""
    found = problems(document(**{given: "value"}))
    assert len(found) == 1
    assert f"connections.x.{missing}: is empty but {given} is set" in found[0]


def test_role_mode_requires_the_forwarding_prefix() -> None:
    """Without access keys, a bucket not starting with mp-forwarding- is refused."""
    found = problems(document(s3_bucket_name="my-bucket"))
    assert len(found) == 1
    assert "connections.x.s3_bucket_name" in found[0]
    assert "must begin with 'mp-forwarding-'" in found[0]


def test_require_forwarding_prefix_false_allows_any_bucket_in_role_mode() -> None:
    """require_forwarding_prefix = false lets role mode use any bucket name."""
    settings = load(s3_bucket_name="my-bucket", require_forwarding_prefix=False)
    assert settings.role_based
    assert settings.s3_bucket_name == "my-bucket"


def test_user_mode_does_not_require_the_forwarding_prefix() -> None:
    """With access keys any valid bucket name is accepted."""
    settings = load(s3_bucket_name="my-bucket", access_key_id="a", secret_access_key="b")
    assert not settings.role_based


def test_canned_acl_is_set_in_role_mode_only() -> None:
    """Role mode writes with bucket-owner-full-control; user mode and localdir send no ACL."""
    assert load().canned_acl == ROLE_MODE_ACL == "bucket-owner-full-control"
    assert load(access_key_id="a", secret_access_key="b").canned_acl is None
    local = load(destination="localdir", local_path="/tmp/out", s3_bucket_name=None)
    assert local.destination is Destination.LOCALDIR
    assert local.canned_acl is None


def test_role_mode_acl_is_sent_with_the_put() -> None:
    """The PutObject arguments carry ACL only in role mode (what the seed's policy allows)."""
    from s3forward.layout import encode_object
    from s3forward.sinks.s3 import put_object_args

    obj = encode_object("App_00000000000000000000_00001.txt", b"{}\n", compress=False)
    role, user = load(), load(access_key_id="a", secret_access_key="b")
    assert put_object_args(role.s3_bucket_name, role.objects, obj)["ACL"] == ROLE_MODE_ACL
    assert "ACL" not in put_object_args(user.s3_bucket_name, user.objects, obj)


def test_every_problem_is_listed_at_once() -> None:
    """A config with three mistakes reports all three, each with its key."""
    data = document(
        send_lifecyle_events=True,  # unknown key
        use_compression="yes",  # wrong type
        store_data_in_folders_by_date=None,  # UNSELECTED
    )
    found = problems(data)
    assert len(found) == 3, found
    assert any("connections.x.send_lifecyle_events: unknown setting" in p for p in found)
    assert any(
        "connections.x.use_compression: expected true or false, got 'yes'" in p for p in found
    )
    assert any(UNSELECTED_MESSAGE in p for p in found)


def test_invalid_choice_lists_the_allowed_values() -> None:
    """A wrong encryption method names what was given and every allowed value."""
    (found,) = problems(document(server_side_encryption_method="AES512"))
    assert "'AES512'" in found
    for allowed in ("'None'", "'AES256'", "'aws:kms'", "'aws:kms:dsse'"):
        assert allowed in found


def test_kms_key_id_without_kms_is_an_error() -> None:
    """sse_kms_key_id only makes sense with aws:kms or aws:kms:dsse."""
    (found,) = problems(document(sse_kms_key_id="arn:aws:kms:us-east-1:1:key/x"))
    assert "connections.x.sse_kms_key_id" in found
    settings = load(server_side_encryption_method="aws:kms", sse_kms_key_id="k")
    assert settings.server_side_encryption_method is Encryption.KMS
    assert settings.sse_kms_key_id == "k"


def test_bad_region_and_bucket_name_are_reported() -> None:
    """A malformed region and an invalid bucket name are both reported."""
    found = problems(document(aws_region_endpoint="Europe", s3_bucket_name="Bad_Bucket"))
    assert any("aws_region_endpoint: expected an AWS region" in p for p in found)
    assert any("'Bad_Bucket' is not a valid bucket name" in p for p in found)


def test_connection_naming_an_unknown_input_is_refused() -> None:
    """A connection that reads an undefined input is an error naming the known inputs."""
    found = problems(document(inputs=["mobile"]))
    assert any("names unknown input 'mobile' (inputs: web)" in p for p in found)


def test_an_input_no_connection_forwards_is_refused() -> None:
    """Batches of an input that no connection reads would get a 202 and go nowhere."""
    found = problems(document(inputs=["mobile"]))
    assert any("inputs.web: is not forwarded by any connection" in p for p in found), found


# ------------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("10m", 600.0), ("30s", 30.0), ("24h", 86400.0), ("1d", 86400.0), ("500ms", 0.5), (90, 90.0)],
)
def test_durations_accept_units(given: Any, seconds: float) -> None:
    """Durations are seconds or a number with ms/s/m/h/d."""
    assert load(batch_window=given).batch_window == seconds


def test_duration_without_a_known_unit_is_an_error() -> None:
    """ "10 minutes" is refused with an example of what is accepted."""
    (found,) = problems(document(session_timeout="10 minutes"))
    assert 'connections.x.session_timeout: expected seconds or a duration such as "10m"' in found


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("64MiB", 64 * 1024**2),
        ("64MB", 64 * 1000**2),
        ("2KiB", 2048),
        ("1GiB", 1024**3),
        (4096, 4096),
    ],
)
def test_sizes_accept_units(given: Any, size: int) -> None:
    """Sizes are bytes or a number with B/KB/KiB/MB/MiB/GB/GiB."""
    assert load(max_file_bytes=given).max_file_bytes == size


def test_a_file_size_over_what_can_be_built_in_memory_is_refused_with_the_reason() -> None:
    """max_file_bytes is at most 1 GiB: a file is built in memory and uploaded in one PUT."""
    (found,) = problems(document(max_file_bytes="2GiB"))
    assert "max_file_bytes" in found
    assert "expected at most 1073741824 bytes (1GiB: a file is built and uploaded whole" in found
    assert "got 2147483648" in found


def test_size_that_is_not_a_size_is_an_error() -> None:
    """ "lots" is refused with an example size."""
    (found,) = problems(document(max_file_bytes="lots"))
    assert "expected a size in bytes such as 1048576 or \"64MiB\", got 'lots'" in found


# ---------------------------------------------------------------------------- the file


def test_load_config_reads_a_toml_file(tmp_path: Path) -> None:
    """load_config parses TOML and records the file as the source."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[inputs.web]\napi_key = "k"\napi_secret = "${S}"\n'
        '[connections.x]\ninputs = ["web"]\ns3_bucket_name = "mp-forwarding-a"\n'
        'store_data_in_folders_by_date = "upload_time"\nbatch_window = "5m"\n',
        encoding="utf-8",
    )
    config = load_config(path, env={"S": "secret"})
    assert config.source == str(path)
    assert config.inputs["web"].api_secret.reveal() == "secret"
    assert config.inputs["web"].app_name == "web"  # App Name defaults to the input's name
    assert config.connections["x"].batch_window == 300.0


def test_invalid_toml_is_reported_with_its_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the line."""
    path = tmp_path / "broken.toml"
    path.write_text('[inputs.web]\napi_key = "k"\napi_secret = \n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert str(path) in message
    assert "is not valid TOML" in message
    assert "line 3" in message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(path)


def test_problem_locations_name_the_file(tmp_path: Path) -> None:
    """Problems from load_config start with the file's path."""
    path = tmp_path / "c.toml"
    path.write_text('[inputs.web]\napi_key = "k"\napi_secret = "s"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: connections: at least one [connections.NAME] table is required"
    ]


# ------------------------------------------------------------------- default and describe


def test_embedded_default_is_a_local_upload_time_connection(tmp_path: Path) -> None:
    """The embedded default writes to a local directory with upload-time date folders."""
    config = embedded_default(tmp_path)
    (connection,) = config.connections.values()
    assert connection.destination is Destination.LOCALDIR
    assert connection.local_path == tmp_path / "bucket"
    assert connection.store_data_in_folders_by_date is DateFolders.UPLOAD_TIME
    assert config.spool.path == tmp_path / "spool.db"
    assert config.connections_for_input("default") == [connection]


def test_describe_config_masks_every_secret() -> None:
    """describe_config never shows a secret value, and reports mode, batching and ACL."""
    config: Config = config_from_mapping(
        document(access_key_id="AKIA-visible-not", secret_access_key="sk-hidden-value"),
        source=SOURCE,
        env={},
    )
    described = describe_config(config)
    text = orjson.dumps(described).decode()
    for secret in ("AKIA-visible-not", "sk-hidden-value", '"s"'):
        assert secret not in text
    connection = described["connections"]["x"]
    assert connection["secret_access_key"] == "****"
    assert connection["authentication"] == "user-based"
    assert connection["batching_mode"] == "per_device"
    assert connection["canned_acl"] is None
    assert described["inputs"]["web"]["api_secret"] == "****"


def test_secret_never_shows_itself() -> None:
    """Secret's repr and str are masked; reveal gives the value."""
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in repr(ConnectionSettings("x", ("w",), BUCKET, access_key_id=secret))
    assert secret.reveal() == "hunter2"
