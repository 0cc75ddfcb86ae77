"""Errors raised by the API client.

Every message is built from redacted pieces: the client passes its credential scrubber
(`Credentials.redact`) in, so even a server that echoes the Authorization header back in
an error body cannot leak the secret into logs or tracebacks.

Hierarchy::

    ApiClientError
    +-- ApiConfigError (also a ValueError)   bad credentials / settings, raised at start-up
    +-- ApiError                              a non-2xx HTTP response (after retries, if any)
    +-- ApiTransportError                     connection error / timeout (after retries, if any)
    +-- ApiProtocolError                      a 2xx response whose body breaks the list contract
        +-- NotJsonError                      ... because it is not JSON at all (retried)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REQUEST_ID_HEADERS",
    "ApiClientError",
    "ApiConfigError",
    "ApiError",
    "ApiProtocolError",
    "ApiTransportError",
    "ErrorItem",
    "NotJsonError",
    "Problem",
    "is_retryable_status",
    "status_class",
]

Redactor = Callable[[str], str]

_MAX_FIELD_CHARS = 500
_MAX_BODY_SNIPPET_CHARS = 200
_MAX_ERROR_ITEMS = 20
#: Headers that may carry the server's request id, in order of preference.
REQUEST_ID_HEADERS = ("x-request-id", "request-id")


def _identity(text: str) -> str:
    return text


def _clip(text: str, limit: int = _MAX_FIELD_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_class(status: int | None) -> str:
    """`"2xx"`.. `"5xx"` for an HTTP status, `"error"` when there was no response."""
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


def is_retryable_status(status: int) -> bool:
    """429 (rate limited), 408 (request timeout) and every 5xx are worth retrying.

    400/401/403/404/409/422 and the other 4xx are not: the same request will fail again.
    """
    return status in (408, 429) or 500 <= status <= 599


class ApiClientError(Exception):
    """Base class of everything the API client raises on purpose."""


class ApiConfigError(ApiClientError, ValueError):
    """Invalid client configuration (credentials, base URL, limits)."""


@dataclass(frozen=True)
class ErrorItem:
    """One entry of a problem+json `errors[]` array."""

    field: str | None = None
    code: str | None = None
    message: str | None = None

    def describe(self) -> str:
        head = self.field or "?"
        if self.code:
            head = f"{head} ({self.code})"
        return f"{head}: {self.message}" if self.message else head


def _opt_str(value: Any, redact: Redactor) -> str | None:
    if isinstance(value, str) and value.strip():
        return _clip(redact(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


@dataclass(frozen=True)
class Problem:
    """The useful parts of an error response (RFC 9457 problem+json, or anything else)."""

    status: int
    title: str | None = None
    detail: str | None = None
    type: str | None = None
    request_id: str | None = None
    errors: tuple[ErrorItem, ...] = ()
    more_errors: int = 0
    body_snippet: str | None = None  # only when the body was not a JSON object

    @classmethod
    def from_parts(
        cls,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        *,
        redact: Redactor = _identity,
    ) -> Problem:
        """Parse an error response leniently; never raises."""
        header_rid = next(
            (headers[h] for h in REQUEST_ID_HEADERS if headers.get(h)),
            None,
        )
        request_id = _opt_str(header_rid, redact)
        try:
            doc: Any = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            snippet: str | None = None
            if body:
                text = body.decode("utf-8", errors="replace")
                snippet = _clip(redact(text), _MAX_BODY_SNIPPET_CHARS) or None
            return cls(status=status, request_id=request_id, body_snippet=snippet)

        items: list[ErrorItem] = []
        raw_items = doc.get("errors")
        more = 0
        if isinstance(raw_items, list):
            for raw in raw_items[:_MAX_ERROR_ITEMS]:
                if isinstance(raw, dict):
                    items.append(
                        ErrorItem(
                            field=_opt_str(raw.get("field"), redact),
                            code=_opt_str(raw.get("code"), redact),
                            message=_opt_str(raw.get("message"), redact),
                        )
                    )
                elif isinstance(raw, str):
                    items.append(ErrorItem(message=_opt_str(raw, redact)))
            more = max(0, len(raw_items) - _MAX_ERROR_ITEMS)
        return cls(
            status=status,
            title=_opt_str(doc.get("title"), redact),
            detail=_opt_str(doc.get("detail"), redact),
            type=_opt_str(doc.get("type"), redact),
            request_id=_opt_str(doc.get("request_id"), redact) or request_id,
            errors=tuple(items),
            more_errors=more,
        )


_HINTS = {
    401: "the API credential was rejected: check it is current, and that an API key is "
    "sent raw (no 'Bearer') while an OAuth token is sent as 'Bearer <token>'",
    403: "the credential lacks a required scope",
}


class ApiError(ApiClientError):
    """A non-2xx response. `str(err)` has status, title, detail, errors[] and request_id."""

    def __init__(
        self,
        resource: str,
        problem: Problem,
        *,
        reason_phrase: str = "",
        attempts: int = 1,
        note: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.resource = resource
        self.problem = problem
        self.status = problem.status
        self.title = problem.title
        self.detail = problem.detail
        self.type = problem.type
        self.request_id = problem.request_id
        self.errors = problem.errors
        self.attempts = attempts
        self.retry_after_s = retry_after_s
        super().__init__(self._message(reason_phrase, note))

    @property
    def retryable(self) -> bool:
        """True for statuses that are transient (429, 408, 5xx): a later run may succeed."""
        return is_retryable_status(self.status)

    def _message(self, reason_phrase: str, note: str | None) -> str:
        p = self.problem
        head = f"AskElephant API GET /v2/{self.resource} failed: HTTP {p.status}"
        title = p.title or reason_phrase
        if title:
            head += f" {title}"
        parts = [head]
        if p.detail:
            parts.append(p.detail)
        if p.errors:
            described = "; ".join(item.describe() for item in p.errors)
            if p.more_errors:
                described += f"; and {p.more_errors} more"
            parts.append(f"errors: {described}")
        if p.body_snippet:
            parts.append(f"body: {p.body_snippet}")
        if p.type:
            parts.append(f"type={p.type}")
        parts.append(f"request_id={p.request_id or 'n/a'}")
        hint = _HINTS.get(p.status)
        if p.status == 403:
            hint = f"{hint} (listing {self.resource} needs '{self.resource}:read')"
        if hint:
            parts.append(f"hint: {hint}")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        if note:
            parts.append(note)
        return " | ".join(parts)


class ApiTransportError(ApiClientError):
    """Connection failure or timeout (the original httpx error is `__cause__`)."""

    def __init__(
        self,
        resource: str,
        error: Exception,
        *,
        attempts: int = 1,
        note: str | None = None,
        redact: Redactor = _identity,
    ) -> None:
        self.resource = resource
        self.attempts = attempts
        self.error_type = type(error).__name__
        what = _clip(redact(str(error))) or "no detail"
        message = (
            f"AskElephant API GET /v2/{resource} failed: {self.error_type}: {what}"
            f" | after {attempts} attempt{'s' if attempts != 1 else ''}"
        )
        if note:
            message += f" | {note}"
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return True


class ApiProtocolError(ApiClientError):
    """A successful (2xx) response whose body does not follow the list envelope contract."""

    def __init__(
        self,
        resource: str,
        problem: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        content_type: str | None = None,
    ) -> None:
        self.resource = resource
        self.problem = problem
        self.status = status
        self.request_id = request_id
        where = f"GET /v2/{resource}"
        if status is not None:
            where += f" (HTTP {status}"
            if content_type:
                where += f", content-type {content_type}"
            where += ")"
        message = f"Malformed AskElephant API response to {where}: {problem}"
        message += f" | request_id={request_id or 'n/a'}"
        self.attempts = 1
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return False


class NotJsonError(ApiProtocolError):
    """A 2xx response whose body is not JSON (empty, or e.g. a proxy's HTML page).

    Unlike a JSON body that breaks the envelope (the API's own answer, the same on every
    try), this is most likely something between us and the API answering in its place, so
    the client retries it like a 5xx before it fails the run.
    """

    @property
    def retryable(self) -> bool:
        return True
