"""Transport of the AskElephant API v2 list client: :class:`ApiClient`.

The client is split by concern, the way the Meltano Singer SDK splits a stream:

* request building: :class:`~producer.api.query.ListQuery` (pure) -> path + query params;
* transport: :class:`ApiClient` here (one ``httpx.Client``, timeouts, retries, observer hooks);
* parsing: :func:`~producer.api.page.parse_page` (pure) -> :class:`~producer.api.page.Page`;
* observer hooks: :mod:`producer.api.observer`; errors: :mod:`producer.api.errors`;
  backoff and ``Retry-After``: :mod:`producer.api.retry`.
"""

from __future__ import annotations

import logging
import math
import random as _random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

import httpx

from producer import __version__
from producer.api.auth import Credentials
from producer.api.budget import RateBudget
from producer.api.errors import (
    ApiConfigError,
    ApiError,
    ApiProtocolError,
    ApiTransportError,
    NotJsonError,
    Problem,
    is_retryable_status,
    status_class,
)
from producer.api.observer import ApiObserver, NoopObserver
from producer.api.page import Page, parse_page
from producer.api.query import ListQuery
from producer.api.retry import RetryPolicy, parse_http_date, parse_retry_after

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT_SECONDS", "USER_AGENT", "ApiClient"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://app.askelephant.ai/api"
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
USER_AGENT: Final = f"askelephant-kafka/{__version__}"


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
    error is raised. A 2xx whose body is not JSON (:class:`NotJsonError`, e.g. a proxy's
    HTML page) is retried the same way. Other 4xx raise :class:`ApiError` at once.

    Pass either `http_client` (an ``httpx.Client`` the caller owns and closes) or
    `transport` (e.g. ``httpx.MockTransport``; the client builds and owns its
    ``httpx.Client``), not both. `sleep`, `random` and `clock` are injectable for tests.

    `budget`: the process's shared :class:`~producer.api.budget.RateBudget`; every attempt
    waits for it, and 429s and successes are reported to it.
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
        budget: RateBudget | None = None,
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
        self._budget = budget
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
            try:
                with self._slot(resource):
                    started = time.perf_counter()
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
            if self._budget is not None and status != 429:
                self._budget.succeeded()
            if 200 <= status < 300:
                try:
                    return parse_page(
                        resource,
                        status,
                        response.headers,
                        response.content,
                        redact=self._credentials.redact,
                    )
                except NotJsonError as exc:
                    # A 2xx that is not JSON (a proxy's HTML page) is retried like a 5xx.
                    decision = self._policy.next_wait(
                        attempt=attempt, waited_s=waited, retry_after_s=None, rand=self._random
                    )
                    if decision.wait_s is None:
                        given_up = NotJsonError(
                            resource,
                            f"{exc.problem}; gave up after {attempt} attempt(s): {decision.reason}",
                            status=status,
                            request_id=exc.request_id,
                            content_type=response.headers.get("content-type"),
                        )
                        given_up.attempts = attempt
                        raise given_up from None
                    self._before_retry(
                        resource,
                        reason=str(status),
                        what=f"HTTP {status} with a body that is not JSON "
                        f"(content-type {response.headers.get('content-type') or 'none'})",
                        wait_s=decision.wait_s,
                        attempt=attempt,
                        is_rate_limit=False,
                        request_id=exc.request_id,
                        status=status,
                    )
                    waited += decision.wait_s
                    continue

            problem = Problem.from_parts(
                status, response.headers, response.content, redact=self._credentials.redact
            )
            if not is_retryable_status(status):
                raise ApiError(
                    resource, problem, reason_phrase=response.reason_phrase, attempts=attempt
                )
            now = parse_http_date(response.headers.get("date")) or self._clock()
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
            if status == 429 and self._budget is not None:
                self._budget.rate_limited(retry_after)  # slows down every client, not just this
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

    def _slot(self, resource: str) -> AbstractContextManager[object]:
        return nullcontext() if self._budget is None else self._budget.request(resource)

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
