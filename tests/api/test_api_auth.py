"""Basic authentication of inputs: which header gives which error, and what messages reveal."""

from __future__ import annotations

import base64

import pytest

from s3forward.api.auth import Authenticator, BadCredentials, MissingCredentials, parse_basic
from s3forward.config import InputSettings, Secret

INPUTS = {
    "web": InputSettings("web", "key-web", Secret("s3cr3t:with:colons"), "WebApp"),
    "ios": InputSettings("ios", "key-ios", Secret("ünïcode"), "IosApp"),
}


def header(key: str, secret: str, scheme: str = "Basic") -> bytes:
    return f"{scheme} ".encode() + base64.b64encode(f"{key}:{secret}".encode())


def test_valid_credentials_name_their_input() -> None:
    """Each input's key and secret authenticate as that input, colons and non-ASCII included."""
    auth = Authenticator(INPUTS)
    assert auth.authenticate(header("key-web", "s3cr3t:with:colons")).name == "web"
    assert auth.authenticate(header("key-ios", "ünïcode")).name == "ios"


def test_scheme_is_case_insensitive() -> None:
    """``basic`` and ``BASIC`` are the same scheme."""
    auth = Authenticator(INPUTS)
    assert auth.authenticate(header("key-web", "s3cr3t:with:colons", "basic")).name == "web"
    assert auth.authenticate(header("key-web", "s3cr3t:with:colons", "BASIC")).name == "web"


@pytest.mark.parametrize("value", [None, b"", b"   "])
def test_absent_header_is_missing_credentials(value: bytes | None) -> None:
    """No header, or an empty one, means no credentials (401)."""
    with pytest.raises(MissingCredentials):
        Authenticator(INPUTS).authenticate(value)


@pytest.mark.parametrize(
    "value",
    [b"Bearer abc", b"Basic", b"Basic !!!notbase64", b"Basic " + base64.b64encode(b"nocolon")],
)
def test_malformed_header_is_bad_credentials(value: bytes) -> None:
    """A header that is present but not valid Basic credentials is a 403."""
    with pytest.raises(BadCredentials, match="not valid HTTP Basic"):
        Authenticator(INPUTS).authenticate(value)


def test_unknown_key_and_wrong_secret_look_the_same() -> None:
    """Both failures raise the same message, which names neither the key nor the secret."""
    auth = Authenticator(INPUTS)
    with pytest.raises(BadCredentials) as unknown:
        auth.authenticate(header("key-nobody", "s3cr3t:with:colons"))
    with pytest.raises(BadCredentials) as wrong:
        auth.authenticate(header("key-web", "guess"))
    assert str(unknown.value) == str(wrong.value)
    for word in ("key-nobody", "key-web", "guess", "s3cr3t"):
        assert word not in str(wrong.value)


def test_parse_basic_splits_at_the_first_colon() -> None:
    """The key ends at the first colon; the secret keeps the rest."""
    assert parse_basic(header("k", "a:b")) == ("k", "a:b")
