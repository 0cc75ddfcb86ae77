"""Credentials for the AskElephant API and a redacting `Secret` wrapper.

Two credential kinds exist (docs/askelephant-api.md §1.1):

* an API key ``sk-apik_<id>.<secret>``: sent as the *raw* ``Authorization`` value, no
  ``Bearer`` (the guide pages say so explicitly; the generated reference pages show
  generator boilerplate);
* an OAuth access token: sent as ``Authorization: Bearer <token>``.

Exactly one must be configured.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from producer.api.errors import ApiConfigError

__all__ = ["API_KEY_PREFIX", "REDACTED", "Credentials", "Secret"]

API_KEY_PREFIX = "sk-apik_"
REDACTED = "**********"

CredentialKind = Literal["api_key", "access_token"]


class Secret:
    """A string that never shows itself in ``repr()``, ``str()``, f-strings or logs.

    Use :meth:`get_secret_value` at the one place that really needs the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, got {type(value).__name__}")
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return REDACTED if self._value else ""

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


def _as_secret(value: str | Secret | None) -> Secret | None:
    """Normalise a configured value: strip surrounding whitespace (file-mounted secrets
    usually end in a newline) and treat empty as unset."""
    if value is None:
        return None
    raw = value.get_secret_value() if isinstance(value, Secret) else value
    if not isinstance(raw, str):
        raise ApiConfigError(f"credential must be a string, got {type(raw).__name__}")
    raw = raw.strip()
    return Secret(raw) if raw else None


def _check_header_safe(raw: str, what: str) -> None:
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise ApiConfigError(f"{what} contains whitespace or control characters")
    if not raw.isascii():
        raise ApiConfigError(f"{what} contains non-ASCII characters")


@dataclass(frozen=True)
class Credentials:
    """Exactly one of `api_key` / `access_token`. The repr shows only redacted values."""

    api_key: Secret | None = None
    access_token: Secret | None = None

    def __post_init__(self) -> None:
        has_key = self.api_key is not None
        has_token = self.access_token is not None
        if has_key and has_token:
            raise ApiConfigError(
                "configure exactly one AskElephant credential: got both an API key "
                "(ASKELEPHANT_API_KEY) and an OAuth access token (ASKELEPHANT_ACCESS_TOKEN)"
            )
        if not has_key and not has_token:
            raise ApiConfigError(
                "no AskElephant credential configured: set an API key (ASKELEPHANT_API_KEY, "
                f"'{API_KEY_PREFIX}<id>.<secret>') or an OAuth access token "
                "(ASKELEPHANT_ACCESS_TOKEN)"
            )
        if self.api_key is not None:
            key = self.api_key.get_secret_value()
            if key.lower().startswith("bearer "):
                raise ApiConfigError(
                    "the API key must be the raw key without a 'Bearer' prefix "
                    "(it is sent as the whole Authorization header value)"
                )
            if not key.startswith(API_KEY_PREFIX) or len(key) == len(API_KEY_PREFIX):
                raise ApiConfigError(
                    f"the API key does not look like an AskElephant API key: expected "
                    f"'{API_KEY_PREFIX}<id>.<secret>' (value not shown)"
                )
            _check_header_safe(key, "the API key")
        if self.access_token is not None:
            token = self.access_token.get_secret_value()
            if token.lower().startswith("bearer "):
                raise ApiConfigError(
                    "the OAuth access token must not include the 'Bearer ' prefix; "
                    "the client adds it"
                )
            if token.startswith(API_KEY_PREFIX):
                raise ApiConfigError(
                    f"the access token starts with '{API_KEY_PREFIX}', so it is an API key: "
                    "configure it as the API key (ASKELEPHANT_API_KEY) instead; API keys are "
                    "sent without 'Bearer'"
                )
            if not token:
                raise ApiConfigError("the OAuth access token is empty")
            _check_header_safe(token, "the OAuth access token")

    @classmethod
    def from_values(
        cls,
        *,
        api_key: str | Secret | None = None,
        access_token: str | Secret | None = None,
    ) -> Credentials:
        """Build from raw settings; blank values count as unset, whitespace is stripped."""
        return cls(api_key=_as_secret(api_key), access_token=_as_secret(access_token))

    @property
    def kind(self) -> CredentialKind:
        return "api_key" if self.api_key is not None else "access_token"

    def _secret(self) -> Secret:
        secret = self.api_key if self.api_key is not None else self.access_token
        assert secret is not None  # guaranteed by __post_init__
        return secret

    def authorization_header(self) -> str:
        """The exact `Authorization` header value (raw key, or `Bearer <token>`)."""
        value = self._secret().get_secret_value()
        return value if self.api_key is not None else f"Bearer {value}"

    def redact(self, text: str) -> str:
        """Replace every occurrence of the secret in `text` (e.g. an echoed header)."""
        value = self._secret().get_secret_value()
        return text.replace(value, REDACTED) if value and value in text else text
