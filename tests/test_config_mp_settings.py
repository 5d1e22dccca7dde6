"""Issue 11: mParticle's current connection settings and the config edges a careful user hits."""

from __future__ import annotations

from typing import Any

import pytest

from s3forward.config import MetadataField
from test_config import SOURCE, document, load, problems

# mParticle's current S3 connection settings -> mParticle's default.
CURRENT_DEFAULTS: dict[str, Any] = {
    "send_batches_without_events": True,
    "include_mp_deviceid": False,
    "metadata_field_exclusion": (),
    "send_alias_requests": False,
    "raw_data_feed": False,
}


@pytest.mark.parametrize(("setting", "default"), CURRENT_DEFAULTS.items())
def test_current_mparticle_settings_have_mparticles_defaults(setting: str, default: Any) -> None:
    """Left out of the TOML, each new setting takes mParticle's default."""
    assert getattr(load(), setting) == default


@pytest.mark.parametrize(
    "setting",
    ["send_batches_without_events", "include_mp_deviceid", "send_alias_requests", "raw_data_feed"],
)
def test_current_mparticle_bool_settings_load_both_ways(setting: str) -> None:
    """Each boolean is read from the TOML, and a non-boolean is refused by name."""
    assert getattr(load(**{setting: True}), setting) is True
    assert getattr(load(**{setting: False}), setting) is False
    (found,) = problems(document(**{setting: "yes"}))
    assert f"connections.x.{setting}: expected true or false" in found


def test_metadata_field_exclusion_takes_the_documented_choices() -> None:
    """device_name and ip_address (or their mParticle labels), each once, in the given order."""
    settings = load(metadata_field_exclusion=["IP Address", "device_name", "ip_address"])
    assert settings.metadata_field_exclusion == (
        MetadataField.IP_ADDRESS,
        MetadataField.DEVICE_NAME,
    )
    assert load(metadata_field_exclusion="device_name").metadata_field_exclusion == (
        MetadataField.DEVICE_NAME,
    )


def test_metadata_field_exclusion_refuses_anything_else() -> None:
    """An unknown field is refused with the allowed choices."""
    (found,) = problems(document(metadata_field_exclusion=["device_model"]))
    assert "connections.x.metadata_field_exclusion" in found
    assert "'device_name', 'ip_address'" in found
    assert "'device_model'" in found


def test_a_wrong_date_folder_value_gets_one_error_without_unselected() -> None:
    """ "daily" is refused once, listing only the four real choices (not UNSELECTED), and the
    UNSELECTED sentence, which the user never chose, is not added."""
    found = problems(document(store_data_in_folders_by_date="daily"))
    assert found == [
        f"{SOURCE}: connections.x.store_data_in_folders_by_date: expected one of 'none', "
        "'event_time', 'upload_time', 'event_time_or_upload_time', got 'daily'"
    ]


def test_a_non_string_date_folder_value_gets_one_error() -> None:
    """A boolean is refused once with the same list."""
    (found,) = problems(document(store_data_in_folders_by_date=True))
    assert "expected one of 'none'" in found
    assert "UNSELECTED" not in found


@pytest.mark.parametrize("folder", ["...", "..", "/", " / . / ", "./.."])
def test_a_folder_that_sanitises_to_nothing_is_refused(folder: str) -> None:
    """A non-empty folder_name with nothing safe left would be the bucket root: refused."""
    (found,) = problems(document(folder_name=folder))
    assert "connections.x.folder_name" in found
    assert "no character left after sanitising" in found


def test_an_empty_folder_name_is_the_root() -> None:
    """folder_name = "" means the bucket root, as leaving it out does."""
    assert load(folder_name="").folder_name == ""


@pytest.mark.parametrize("app_name", ["..", "...", " .. "])
def test_an_app_name_that_sanitises_to_nothing_is_refused(app_name: str) -> None:
    """An App Name with nothing safe left is refused instead of silently becoming "app"."""
    data = document()
    data["inputs"]["web"]["app_name"] = app_name
    (found,) = problems(data)
    assert "inputs.web.app_name" in found
