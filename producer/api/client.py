"""The AskElephant API v2 list client, split the way the Meltano Singer SDK splits a stream:

* request building: :class:`ListQuery` (pure, frozen) -> path + query params;
* transport: :class:`ApiClient` (one ``httpx.Client``, timeouts, retries, observer hooks);
* parsing: :func:`parse_page` (pure) -> :class:`Page`, strict about the list envelope.

Only ``GET /v2/<resource>`` list calls are implemented; that is all a change-stream
producer needs (api.md §2).
"""

from __future__ import annotations

import json
import logging
import math
import random as _random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Protocol, Self

import httpx

from producer import __version__
from producer.api.auth import Credentials
from producer.api.errors import (
    ApiConfigError,
    ApiError,
    ApiProtocolError,
    ApiTransportError,
    Problem,
    is_retryable_status,
    status_class,
)
from producer.api.retry import RetryPolicy, parse_http_date, parse_retry_after

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_PAGE_SIZE",
    "ORDER_BY_VALUES",
    "USER_AGENT",
    "ApiClient",
    "ApiObserver",
    "ListQuery",
    "NoopObserver",
    "Page",
    "parse_page",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://app.askelephant.ai/api"
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
MAX_PAGE_SIZE: Final = 100
ORDER_BY_VALUES: Final = ("updated_at:asc", "updated_at:desc")
USER_AGENT: Final = f"askelephant-kafka/{__version__}"

_RESOURCE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_REQUEST_ID_HEADERS = ("x-request-id", "request-id")


# --------------------------------------------------------------------------------------
# Request building (pure)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    """One list request. Every page of a traversal repeats the same filter and order_by and
    adds the cursor: the docs' page-2 example drops them, but whether the cursor encodes
    them is undocumented, so re-sending is the safe choice (api.md §2.1 [INFERRED]; the
    bulk-export guide: "keep the same order_by and filter values for every page")."""

    resource: str
    updated_at_gte: str | None = None
    order_by: str = "updated_at:asc"
    limit: int = MAX_PAGE_SIZE
    cursor: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.resource, str) or not _RESOURCE_RE.match(self.resource):
            raise ValueError(f"invalid resource name {self.resource!r}")
        if self.order_by not in ORDER_BY_VALUES:
            raise ValueError(f"order_by must be one of {ORDER_BY_VALUES}, got {self.order_by!r}")
        if (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not 1 <= self.limit <= MAX_PAGE_SIZE
        ):
            raise ValueError(f"limit must be an integer in 1..{MAX_PAGE_SIZE}, got {self.limit!r}")
        if self.cursor is not None and (not isinstance(self.cursor, str) or not self.cursor):
            raise ValueError("cursor must be a non-empty string or None")
        if self.updated_at_gte is not None:
            _check_timestamp(self.updated_at_gte)

    @property
    def path(self) -> str:
        return f"/v2/{self.resource}"

    def params(self) -> list[tuple[str, str]]:
        """Query params in a stable order: filter, order_by, limit, cursor."""
        out: list[tuple[str, str]] = []
        if self.updated_at_gte is not None:
            out.append(("filter[updated_at][gte]", self.updated_at_gte))
        out.append(("order_by", self.order_by))
        out.append(("limit", str(self.limit)))
        if self.cursor is not None:
            out.append(("cursor", self.cursor))
        return out

    def next_page(self, cursor: str) -> ListQuery:
        """The same query continued at `cursor` (a page's `next_cursor`)."""
        return replace(self, cursor=cursor)


def _check_timestamp(value: str) -> None:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"updated_at_gte must be an ISO-8601 timestamp with a UTC offset, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"updated_at_gte must carry a UTC offset (e.g. 'Z'), got {value!r}")


# --------------------------------------------------------------------------------------
# Parsing (pure)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One parsed list page plus the response metadata worth keeping."""

    records: list[Any]
    """The `data` items as parsed (normally objects; the sync rejects any other)."""
    has_more: bool
    next_cursor: str | None
    api_version: str | None = None  # X-Api-Version header, format undocumented
    server_date: datetime | None = None  # Date header, aware UTC
    request_id: str | None = None  # X-Request-Id / Request-Id header, if any
    body: bytes | None = field(default=None, repr=False, compare=False)
    """The response body as received: dead letters cut records from it byte for byte."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, dict) else type(value).__name__
    )


def _header(headers: httpx.Headers, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_page(
    resource: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    redact: Callable[[str], str] = lambda text: text,
) -> Page:
    """Parse a 2xx list response; raise :class:`ApiProtocolError` on any envelope violation.

    Expected (api.md §2.3): ``{"object": "list", "data": [{...}], "has_more": bool,
    "next_cursor": str | null}``, and a non-empty `next_cursor` whenever `has_more` is true.
    A malformed body is never treated as an empty page.
    """
    hdrs = httpx.Headers(headers)
    request_id = _header(hdrs, _REQUEST_ID_HEADERS)
    content_type = hdrs.get("content-type")

    def fail(problem: str) -> ApiProtocolError:
        return ApiProtocolError(
            resource,
            redact(problem),
            status=status,
            request_id=redact(request_id) if request_id else None,
            content_type=content_type,
        )

    if not body:
        raise fail("empty body, expected a JSON list envelope")
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(f"body is not valid JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise fail(f"body is a JSON {_type_name(doc)}, expected an object")
    missing = [k for k in ("object", "data", "has_more", "next_cursor") if k not in doc]
    if missing:
        raise fail(f"envelope is missing {', '.join(repr(k) for k in missing)}")
    if doc["object"] != "list":
        raise fail(f"'object' must be \"list\", got {json.dumps(doc['object'])[:60]}")
    data = doc["data"]
    if not isinstance(data, list):
        raise fail(f"'data' must be an array, got {_type_name(data)}")
    # An item that is not an object is the sync's to reject (a dead letter), not a reason to
    # fail the page: the records around it are good.
    has_more = doc["has_more"]
    if not isinstance(has_more, bool):
        raise fail(f"'has_more' must be a boolean, got {_type_name(has_more)}")
    next_cursor = doc["next_cursor"]
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise fail(f"'next_cursor' must be a string or null, got {_type_name(next_cursor)}")
    if has_more and not next_cursor:
        raise fail("'has_more' is true but 'next_cursor' is null or empty")
    return Page(
        records=data,
        has_more=has_more,
        next_cursor=next_cursor,
        api_version=_header(hdrs, ("x-api-version",)),
        server_date=parse_http_date(hdrs.get("date")),
        request_id=request_id,
        body=body,
    )


# --------------------------------------------------------------------------------------
# Observability hooks
# --------------------------------------------------------------------------------------


class ApiObserver(Protocol):
    """Receives per-attempt measurements; producer.metrics can implement it.

    `status_class` is "2xx", "3xx", "4xx", "5xx" or "error" (no response: transport error).
    `reason` for a retry is the HTTP status ("429", "503") or the httpx exception name
    ("ConnectError", "ReadTimeout"). Called synchronously; keep it cheap.
    """

    def on_request(self, resource: str, status_class: str, duration_s: float) -> None: ...

    def on_retry(self, resource: str, reason: str, wait_s: float, is_rate_limit: bool) -> None: ...


class NoopObserver:
    """The default observer: ignores everything."""

    def on_request(self, resource: str, status_class: str, duration_s: float) -> None:
        return None

    def on_retry(self, resource: str, reason: str, wait_s: float, is_rate_limit: bool) -> None:
        return None


# --------------------------------------------------------------------------------------
# Transport
# --------------------------------------------------------------------------------------

# Transport errors that will not go away by retrying (configuration / client-side bugs).
_PERMANENT_TRANSPORT_ERRORS: Final = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _normalise_base_url(base_url: str) -> str:
    try:
        url = httpx.URL(base_url.strip())
    except (TypeError, httpx.InvalidURL) as exc:
        raise ApiConfigError(f"invalid API base URL {base_url!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ApiConfigError(
            f"API base URL must be an absolute http(s) URL such as {DEFAULT_BASE_URL!r}, "
            f"got {base_url!r}"
        )
    if url.query or url.fragment or url.userinfo:
        raise ApiConfigError(
            "API base URL must not contain a query, fragment or user info "
            f"(got scheme {url.scheme!r}, host {url.host!r})"
        )
    return str(url).rstrip("/")


class ApiClient:
    """Synchronous client for the AskElephant v2 list endpoints.

    Retries 429 (always honouring `Retry-After`), 408, every 5xx, connection errors and
    timeouts with exponential backoff + full jitter, within `max_retry_wait_seconds` of
    total sleep per :meth:`fetch_page` call and `max_attempts` attempts; then the last
    error is raised. Other 4xx raise :class:`ApiError` at once.

    Pass either `http_client` (an ``httpx.Client`` the caller owns and closes) or
    `transport` (e.g. ``httpx.MockTransport``; the client builds and owns its
    ``httpx.Client``), not both. `sleep`, `random` and `clock` are injectable for tests.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_seconds: float | httpx.Timeout = DEFAULT_TIMEOUT_SECONDS,
        max_retry_wait_seconds: float | None = None,
        max_attempts: int | None = None,
        retry_policy: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        observer: ApiObserver | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not isinstance(credentials, Credentials):
            raise ApiConfigError("credentials must be a producer.api.Credentials instance")
        if http_client is not None and transport is not None:
            raise ApiConfigError("pass either http_client or transport, not both")
        if retry_policy is not None and (
            max_retry_wait_seconds is not None or max_attempts is not None
        ):
            raise ApiConfigError(
                "pass either retry_policy or max_retry_wait_seconds/max_attempts, not both"
            )
        if retry_policy is None:
            overrides: dict[str, Any] = {}
            if max_retry_wait_seconds is not None:
                overrides["max_total_wait_s"] = max_retry_wait_seconds
            if max_attempts is not None:
                overrides["max_attempts"] = max_attempts
            try:
                retry_policy = RetryPolicy(**overrides)
            except ValueError as exc:
                raise ApiConfigError(f"invalid retry settings: {exc}") from None
        if isinstance(timeout_seconds, httpx.Timeout):
            self._timeout = timeout_seconds
        else:
            if (
                isinstance(timeout_seconds, bool)
                or not isinstance(timeout_seconds, int | float)
                or not math.isfinite(timeout_seconds)
                or timeout_seconds <= 0
            ):
                raise ApiConfigError(
                    f"timeout_seconds must be a positive number, got {timeout_seconds!r}"
                )
            self._timeout = httpx.Timeout(float(timeout_seconds))

        self._credentials = credentials
        self._base_url = _normalise_base_url(base_url)
        self._policy = retry_policy
        self._observer: ApiObserver = observer if observer is not None else NoopObserver()
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._headers = {
            "Authorization": credentials.authorization_header(),
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._owns_client = http_client is None
        self._http = (
            http_client
            if http_client is not None
            else httpx.Client(transport=transport, timeout=self._timeout, follow_redirects=False)
        )
        self._closed = False

    # -- public API ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._policy

    def __repr__(self) -> str:
        return (
            f"ApiClient(base_url={self._base_url!r}, credential={self._credentials.kind}, "
            f"retry_policy={self._policy!r})"
        )

    def url_for(self, query: ListQuery) -> str:
        return f"{self._base_url}{query.path}"

    def fetch_page(self, query: ListQuery) -> Page:
        """GET one page, retrying transient failures; see the class docstring."""
        if self._closed:
            raise RuntimeError("ApiClient is closed")
        resource = query.resource
        url = self.url_for(query)
        params = httpx.QueryParams(tuple(query.params()))
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                response = self._http.get(
                    url, params=params, headers=self._headers, timeout=self._timeout
                )
            except httpx.TransportError as exc:
                self._observer.on_request(resource, "error", time.perf_counter() - started)
                if isinstance(exc, _PERMANENT_TRANSPORT_ERRORS):
                    raise self._transport_error(resource, exc, attempt, None) from exc
                decision = self._policy.next_wait(
                    attempt=attempt, waited_s=waited, retry_after_s=None, rand=self._random
                )
                if decision.wait_s is None:
                    raise self._transport_error(resource, exc, attempt, decision.reason) from exc
                self._before_retry(
                    resource,
                    reason=type(exc).__name__,
                    what=f"{type(exc).__name__}: {self._credentials.redact(str(exc))}",
                    wait_s=decision.wait_s,
                    attempt=attempt,
                    is_rate_limit=False,
                    request_id=None,
                )
                waited += decision.wait_s
                continue
            except httpx.DecodingError as exc:
                self._observer.on_request(resource, "error", time.perf_counter() - started)
                raise ApiProtocolError(
                    resource, f"response body could not be decoded ({type(exc).__name__})"
                ) from exc

            status = response.status_code
            self._observer.on_request(resource, status_class(status), time.perf_counter() - started)
            if 200 <= status < 300:
                return parse_page(
                    resource,
                    status,
                    response.headers,
                    response.content,
                    redact=self._credentials.redact,
                )

            problem = Problem.from_parts(
                status, response.headers, response.content, redact=self._credentials.redact
            )
            if not is_retryable_status(status):
                raise ApiError(
                    resource, problem, reason_phrase=response.reason_phrase, attempts=attempt
                )
            now = parse_http_date(response.headers.get("date")) or self._clock()
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
            decision = self._policy.next_wait(
                attempt=attempt, waited_s=waited, retry_after_s=retry_after, rand=self._random
            )
            if decision.wait_s is None:
                raise ApiError(
                    resource,
                    problem,
                    reason_phrase=response.reason_phrase,
                    attempts=attempt,
                    note=decision.reason,
                    retry_after_s=retry_after,
                )
            self._before_retry(
                resource,
                reason=str(status),
                what=f"HTTP {status}"
                + (f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""),
                wait_s=decision.wait_s,
                attempt=attempt,
                is_rate_limit=status == 429,
                request_id=problem.request_id,
                status=status,
            )
            waited += decision.wait_s

    def iter_pages(self, query: ListQuery) -> Iterator[Page]:
        """Follow `next_cursor` from `query` until `has_more` is false.

        Raises :class:`ApiProtocolError` if the server hands back a cursor it already
        gave in this traversal (which would otherwise loop forever).
        """
        seen: set[str] = set()
        while True:
            page = self.fetch_page(query)
            yield page
            if not page.has_more or page.next_cursor is None:
                return
            if page.next_cursor in seen or page.next_cursor == query.cursor:
                raise ApiProtocolError(
                    query.resource,
                    "the server returned a cursor already used in this traversal",
                    request_id=page.request_id,
                )
            seen.add(page.next_cursor)
            query = query.next_page(page.next_cursor)

    def close(self) -> None:
        """Close the underlying httpx.Client if this object created it. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._owns_client:
                self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _transport_error(
        self, resource: str, exc: httpx.TransportError, attempts: int, note: str | None
    ) -> ApiTransportError:
        return ApiTransportError(
            resource, exc, attempts=attempts, note=note, redact=self._credentials.redact
        )

    def _before_retry(
        self,
        resource: str,
        *,
        reason: str,
        what: str,
        wait_s: float,
        attempt: int,
        is_rate_limit: bool,
        request_id: str | None,
        status: int | None = None,
    ) -> None:
        logger.warning(
            "AskElephant GET /v2/%s attempt %d/%d failed with %s; retrying in %.2f s%s",
            resource,
            attempt,
            self._policy.max_attempts,
            what,
            wait_s,
            f" (request_id={request_id})" if request_id else "",
            extra={
                "resource": resource,
                "status": status,
                "retry_reason": reason,
                "wait_s": round(wait_s, 3),
                "attempt": attempt,
                "rate_limited": is_rate_limit,
            },
        )
        self._observer.on_retry(resource, reason, wait_s, is_rate_limit)
        self._sleep(wait_s)
