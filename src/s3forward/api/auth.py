"""HTTP Basic authentication of inputs, as the mParticle Events API does it.

The username is an input's API key and the password its API secret. A missing header is a 401;
a header that is present but wrong is a 403. An unknown key and a wrong secret give the same
message, and the secret is compared in constant time, so that neither the answer nor its timing
tells a caller which keys exist. Keys and secrets never appear in messages or logs.
"""

from __future__ import annotations

import binascii
import hmac
from base64 import b64decode
from collections.abc import Mapping

from s3forward.config import InputSettings
from s3forward.errors import AuthenticationError, BadCredentials, MissingCredentials

INVALID_CREDENTIALS = "invalid API key or secret"
MISSING_CREDENTIALS = "credentials required: HTTP Basic auth with the input's API key and secret"
MALFORMED_CREDENTIALS = "the Authorization header is not valid HTTP Basic credentials"

# Compared against when the key is unknown, so that both failures take the same time.
_DUMMY_SECRET = b"\x00" * 32


def parse_basic(header: bytes) -> tuple[str, str]:
    """Split ``Basic base64(key:secret)`` into ``(key, secret)``; raise ``BadCredentials``."""
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic" or not encoded:
        raise BadCredentials(MALFORMED_CREDENTIALS)
    try:
        decoded = b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadCredentials(MALFORMED_CREDENTIALS) from None
    key, colon, secret = decoded.partition(":")
    if not colon:
        raise BadCredentials(MALFORMED_CREDENTIALS)
    return key, secret


class Authenticator:
    """Finds the input whose key and secret a request's ``Authorization`` header carries."""

    def __init__(self, inputs: Mapping[str, InputSettings]) -> None:
        # Web inputs (issue 13) have a public key and no secret: never valid Basic credentials.
        self._by_key = {i.api_key: i for i in inputs.values() if i.web is None}

    def authenticate(self, header: bytes | None) -> InputSettings:
        """The input named by ``header``.

        Raises ``MissingCredentials`` when there is no header and ``BadCredentials`` when it is
        malformed, names an unknown key, or has the wrong secret.
        """
        if not header or not header.strip():
            raise MissingCredentials(MISSING_CREDENTIALS)
        key, secret = parse_basic(header)
        found = self._by_key.get(key)
        expected = found.api_secret.reveal().encode("utf-8") if found else _DUMMY_SECRET
        matches = hmac.compare_digest(secret.encode("utf-8"), expected)
        if found is None or not matches:
            raise BadCredentials(INVALID_CREDENTIALS)
        return found


__all__ = [
    "AuthenticationError",
    "Authenticator",
    "BadCredentials",
    "MissingCredentials",
    "parse_basic",
]
