"""httpx client for the AskElephant API v2 list endpoints.

Request building (:class:`ListQuery`), transport with retries (:class:`ApiClient`,
:class:`RetryPolicy`) and parsing (:func:`parse_page` -> :class:`Page`) are separate;
errors are in :mod:`producer.api.errors`, credentials in :mod:`producer.api.auth`.
"""

from producer.api.auth import API_KEY_PREFIX, Credentials, Secret
from producer.api.client import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_PAGE_SIZE,
    ORDER_BY_VALUES,
    USER_AGENT,
    ApiClient,
    ApiObserver,
    ListQuery,
    NoopObserver,
    Page,
    parse_page,
)
from producer.api.errors import (
    ApiClientError,
    ApiConfigError,
    ApiError,
    ApiProtocolError,
    ApiTransportError,
    ErrorItem,
    Problem,
    is_retryable_status,
    status_class,
)
from producer.api.retry import RetryDecision, RetryPolicy, parse_http_date, parse_retry_after

__all__ = [
    "API_KEY_PREFIX",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_PAGE_SIZE",
    "ORDER_BY_VALUES",
    "USER_AGENT",
    "ApiClient",
    "ApiClientError",
    "ApiConfigError",
    "ApiError",
    "ApiObserver",
    "ApiProtocolError",
    "ApiTransportError",
    "Credentials",
    "ErrorItem",
    "ListQuery",
    "NoopObserver",
    "Page",
    "Problem",
    "RetryDecision",
    "RetryPolicy",
    "Secret",
    "is_retryable_status",
    "parse_http_date",
    "parse_page",
    "parse_retry_after",
    "status_class",
]
