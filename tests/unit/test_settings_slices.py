"""A connection's settings are handed out in slices that validate themselves."""

from __future__ import annotations

import pickle
from dataclasses import fields

import pytest

from s3forward.config import (
    BucketAccess,
    ConnectionSettings,
    DateFolders,
    Encryption,
    FileSettings,
    ObjectOptions,
    Secret,
)


def connection(**overrides: object) -> ConnectionSettings:
    values: dict[str, object] = {
        "name": "c",
        "inputs": ("app",),
        "s3_bucket_name": "mp-forwarding-x",
        "store_data_in_folders_by_date": DateFolders.NONE,
        "access_key_id": Secret("AKIA-SECRET-1"),
        "secret_access_key": Secret("very-secret-2"),
        "external_id": Secret("external-3"),
    }
    values.update(overrides)
    return ConnectionSettings(**values)  # type: ignore[arg-type]


def test_bucket_access_refuses_one_key_without_the_other() -> None:
    """User-based mode needs both keys; role-based neither."""
    with pytest.raises(ValueError, match="set both access_key_id and secret_access_key"):
        _ = connection(secret_access_key=None).access


def test_bucket_access_needs_a_bucket_for_s3() -> None:
    """An S3 destination without a bucket name is refused when the slice is made."""
    with pytest.raises(ValueError, match="s3_bucket_name is required"):
        _ = connection(s3_bucket_name="").access


def test_object_options_refuse_a_kms_key_without_kms_encryption() -> None:
    """sse_kms_key_id only makes sense with aws:kms or aws:kms:dsse."""
    with pytest.raises(ValueError, match="needs server_side_encryption_method aws:kms"):
        _ = connection(sse_kms_key_id="arn:aws:kms:key").objects
    options = connection(
        sse_kms_key_id="arn:aws:kms:key", server_side_encryption_method=Encryption.KMS
    ).objects
    assert isinstance(options, ObjectOptions) and options.kms_key_id == "arn:aws:kms:key"


def test_the_file_slice_holds_no_secret_and_nothing_about_the_bucket() -> None:
    """What is pickled to the build worker: filters, outbound form, key layout only."""
    file_settings = connection(unique_id="u-1", folder_name="f").file_settings
    assert isinstance(file_settings, FileSettings)
    blob = pickle.dumps(file_settings)
    for secret in (b"AKIA-SECRET-1", b"very-secret-2", b"external-3", b"mp-forwarding-x"):
        assert secret not in blob
    names = {f.name for f in fields(FileSettings)}
    assert not names & {"access_key_id", "secret_access_key", "external_id", "s3_bucket_name"}
    assert (file_settings.unique_id, file_settings.folder_name) == ("u-1", "f")


def test_the_access_slice_keeps_secrets_masked() -> None:
    """BucketAccess holds the keys as Secret: its repr never shows them."""
    access = connection().access
    assert isinstance(access, BucketAccess)
    assert "very-secret-2" not in repr(access) and "AKIA-SECRET-1" not in repr(access)
