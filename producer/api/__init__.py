"""httpx client for the AskElephant API v2 list endpoints.

One module per concern: request building (:mod:`~producer.api.query`, :class:`ListQuery`),
transport with retries (:mod:`~producer.api.client`, :class:`ApiClient`;
:mod:`~producer.api.retry`, :class:`RetryPolicy`), parsing (:mod:`~producer.api.page`,
:func:`parse_page` -> :class:`Page`), observer hooks (:mod:`~producer.api.observer`), errors
(:mod:`~producer.api.errors`) and credentials (:mod:`~producer.api.auth`).
"""

from producer.api.auth import API_KEY_PREFIX, Credentials, Secret
from producer.api.client import DEFAULT_BASE_URL, DEFAULT_TIMEOUT_SECONDS, USER_AGENT, ApiClient
from producer.api.errors import (
    ApiClientError,
    ApiConfigError,
    ApiError,
    ApiProtocolError,
    ApiTransportError,
    ErrorItem,
    NotJsonError,
    Problem,
    is_retryable_status,
    status_class,
)
from producer.api.observer import ApiObserver, NoopObserver
from producer.api.page import Page, parse_page
from producer.api.query import MAX_PAGE_SIZE, ORDER_BY_VALUES, ListQuery
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
    "NotJsonError",
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
