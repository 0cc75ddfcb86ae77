"""Unit tests for producer.api: credentials, request building, parsing, transport/retries."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from producer.api import (
    DEFAULT_BASE_URL,
    USER_AGENT,
    ApiClient,
    ApiConfigError,
    ApiError,
    ApiProtocolError,
    ApiTransportError,
    Credentials,
    ListQuery,
    NotJsonError,
    Page,
    RetryPolicy,
    Secret,
    parse_page,
)

pytestmark = pytest.mark.unit

API_KEY = "sk-apik_test123.s3cr3tvalue"
SECRET_PART = "s3cr3tvalue"
TOKEN = "oauth-token-abcdef"
BASE = "http://api.test/api"

Handler = Callable[[httpx.Request], httpx.Response]


def envelope(
    records: list[dict[str, Any]] | None = None,
    *,
    has_more: bool = False,
    next_cursor: str | None = None,
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": records if records is not None else [],
        "has_more": has_more,
        "next_cursor": next_cursor,
    }


def ok(body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(200, json=envelope() if body is None else body, headers=headers)


def problem(status: int, **fields: Any) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps({"status": status, **fields}).encode(),
        headers={"Content-Type": "application/problem+json"},
    )


class Script:
    """A MockTransport handler that plays back responses (or raises exceptions) in order."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.steps:
            raise AssertionError("unexpected extra request")
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, float]] = []
        self.retries: list[tuple[str, str, float, bool]] = []

    def on_request(self, resource: str, status_class: str, duration_s: float) -> None:
        self.requests.append((resource, status_class, duration_s))

    def on_retry(self, resource: str, reason: str, wait_s: float, is_rate_limit: bool) -> None:
        self.retries.append((resource, reason, wait_s, is_rate_limit))


def make_client(
    handler: Handler,
    *,
    credentials: Credentials | None = None,
    sleeps: list[float] | None = None,
    rand: float = 0.5,
    **kwargs: Any,
) -> ApiClient:
    record = sleeps if sleeps is not None else []
    kwargs.setdefault("base_url", BASE)
    return ApiClient(
        credentials or Credentials.from_values(api_key=API_KEY),
        transport=httpx.MockTransport(handler),
        sleep=record.append,
        random=lambda: rand,
        **kwargs,
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


# --------------------------------------------------------------------------------------
# Credentials and secrets
# --------------------------------------------------------------------------------------


def test_api_key_sent_raw_without_bearer() -> None:
    script = Script(ok())
    with make_client(script) as client:
        client.fetch_page(ListQuery("contacts"))
    (request,) = script.requests
    assert request.headers["Authorization"] == API_KEY
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("askelephant-kafka/")
    assert request.method == "GET"
    assert request.url.path == "/api/v2/contacts"


def test_access_token_sent_as_bearer() -> None:
    script = Script(ok())
    creds = Credentials.from_values(access_token=TOKEN)
    with make_client(script, credentials=creds) as client:
        client.fetch_page(ListQuery("tags"))
    assert script.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert creds.kind == "access_token"


@pytest.mark.parametrize(
    ("api_key", "access_token"),
    [(None, None), ("", "  "), (API_KEY, TOKEN), (Secret(API_KEY), Secret(TOKEN))],
)
def test_exactly_one_credential(api_key: Any, access_token: Any) -> None:
    with pytest.raises(ApiConfigError, match="credential") as info:
        Credentials.from_values(api_key=api_key, access_token=access_token)
    assert isinstance(info.value, ValueError)
    assert SECRET_PART not in str(info.value)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"api_key": "apik_nope.s3cr3tvalue"}, "does not look like"),
        ({"api_key": f"Bearer {API_KEY}"}, "without a 'Bearer'"),
        ({"api_key": "sk-apik_"}, "does not look like"),
        ({"api_key": "sk-apik_a b.s3cr3tvalue"}, "whitespace"),
        ({"access_token": f"Bearer {TOKEN}"}, "must not include"),
        ({"access_token": API_KEY}, "so it is an API key"),
    ],
)
def test_credential_shape_errors_do_not_echo_the_value(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ApiConfigError, match=match) as info:
        Credentials.from_values(**kwargs)
    assert SECRET_PART not in str(info.value)
    assert TOKEN not in str(info.value)


def test_surrounding_whitespace_is_stripped() -> None:
    creds = Credentials.from_values(api_key=f"  {API_KEY}\n", access_token="")
    assert creds.authorization_header() == API_KEY
    assert creds.kind == "api_key"


def test_secret_is_redacted_everywhere() -> None:
    secret = Secret(API_KEY)
    for rendered in (repr(secret), str(secret), f"{secret}", format(secret, ""), str([secret])):
        assert SECRET_PART not in rendered
    assert secret.get_secret_value() == API_KEY
    assert secret == Secret(API_KEY)
    assert secret != Secret(TOKEN)
    creds = Credentials.from_values(api_key=API_KEY)
    assert SECRET_PART not in repr(creds)
    assert SECRET_PART not in str(creds)
    client = make_client(Script())
    assert SECRET_PART not in repr(client)
    client.close()


def test_secret_never_in_logs_or_errors(
    caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    # A hostile/buggy server echoes the credential back in every error body.
    echo = f"bad header Authorization: {API_KEY}"
    script = Script(
        problem(503, title="Unavailable", detail=echo, request_id="rid_1"),
        httpx.ConnectError(f"refused while sending {API_KEY}"),
        problem(401, title="Unauthorized", detail=echo, errors=[{"message": echo}]),
    )
    caplog.set_level(logging.DEBUG)
    with make_client(script, sleeps=sleeps) as client, pytest.raises(ApiError) as info:
        client.fetch_page(ListQuery("contacts"))
    assert info.value.status == 401
    assert SECRET_PART not in str(info.value)
    assert SECRET_PART not in repr(info.value)
    assert "**********" in str(info.value)
    assert len(sleeps) == 2
    assert caplog.records, "retries must be logged"
    for record in caplog.records:
        assert SECRET_PART not in record.getMessage()
        assert SECRET_PART not in repr(record.__dict__)


# --------------------------------------------------------------------------------------
# Request building
# --------------------------------------------------------------------------------------


def test_list_query_params_first_and_next_page() -> None:
    first = ListQuery("contacts", updated_at_gte="2026-03-01T00:00:00.000Z", limit=50)
    assert first.params() == [
        ("filter[updated_at][gte]", "2026-03-01T00:00:00.000Z"),
        ("order_by", "updated_at:asc"),
        ("limit", "50"),
    ]
    second = first.next_page("eyJpZCI6ImNudF8x")
    assert second.params() == [*first.params(), ("cursor", "eyJpZCI6ImNudF8x")]
    assert first.cursor is None  # frozen, unchanged
    assert ListQuery("tags").params() == [("order_by", "updated_at:asc"), ("limit", "100")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resource": "contacts", "limit": 0},
        {"resource": "contacts", "limit": 101},
        {"resource": "contacts", "limit": True},
        {"resource": "contacts", "order_by": "created_at:asc"},
        {"resource": "contacts", "cursor": ""},
        {"resource": "contacts", "updated_at_gte": "2026-03-01T00:00:00"},
        {"resource": "contacts", "updated_at_gte": "yesterday"},
        {"resource": "../admin"},
        {"resource": ""},
    ],
)
def test_list_query_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        ListQuery(**kwargs)


def test_pages_repeat_filter_and_order_by_with_cursor() -> None:
    script = Script(
        ok(envelope([{"id": "cnt_1"}], has_more=True, next_cursor="c1")),
        ok(envelope([{"id": "cnt_2"}], has_more=True, next_cursor="c2")),
        ok(envelope([{"id": "cnt_3"}])),
    )
    query = ListQuery("contacts", updated_at_gte="2026-03-01T00:00:00Z")
    with make_client(script) as client:
        pages = list(client.iter_pages(query))
    assert [r["id"] for p in pages for r in p.records] == ["cnt_1", "cnt_2", "cnt_3"]
    sent = [list(r.url.params.multi_items()) for r in script.requests]
    base = [
        ("filter[updated_at][gte]", "2026-03-01T00:00:00Z"),
        ("order_by", "updated_at:asc"),
        ("limit", "100"),
    ]
    assert sent == [base, [*base, ("cursor", "c1")], [*base, ("cursor", "c2")]]
    assert all(r.url.path == "/api/v2/contacts" for r in script.requests)


def test_iter_pages_detects_a_cursor_loop() -> None:
    script = Script(
        ok(envelope(has_more=True, next_cursor="c1")),
        ok(envelope(has_more=True, next_cursor="c1")),
    )
    with make_client(script) as client, pytest.raises(ApiProtocolError, match="cursor already"):
        list(client.iter_pages(ListQuery("users")))


def test_base_url_default_and_validation() -> None:
    client = ApiClient(Credentials.from_values(api_key=API_KEY), transport=httpx.MockTransport(ok))
    assert client.base_url == DEFAULT_BASE_URL
    assert client.url_for(ListQuery("engagements")) == f"{DEFAULT_BASE_URL}/v2/engagements"
    client.close()
    for bad in ("app.askelephant.ai/api", "ftp://x/api", "https://x/api?a=1"):
        with pytest.raises(ApiConfigError):
            ApiClient(Credentials.from_values(api_key=API_KEY), base_url=bad)
    trailing = make_client(Script(), base_url="http://h:1/api/")
    assert trailing.base_url == "http://h:1/api"
    trailing.close()


def test_timeout_applied_to_every_request() -> None:
    script = Script(ok())
    with make_client(script, timeout_seconds=12.5) as client:
        client.fetch_page(ListQuery("contacts"))
    timeout = script.requests[0].extensions["timeout"]
    assert timeout["connect"] == 12.5
    assert timeout["read"] == 12.5


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


def test_page_metadata_parsed() -> None:
    body = envelope(
        [{"id": "cnt_1", "updated_at": "2026-03-04T18:25:00Z"}], has_more=True, next_cursor="abc"
    )
    headers = {
        "X-Api-Version": "2026-03-01",
        "Date": "Wed, 04 Mar 2026 18:30:00 GMT",
        "X-Request-Id": "rid_42",
    }
    with make_client(Script(ok(body, headers))) as client:
        page = client.fetch_page(ListQuery("contacts"))
    assert page == Page(
        records=[{"id": "cnt_1", "updated_at": "2026-03-04T18:25:00Z"}],
        has_more=True,
        next_cursor="abc",
        api_version="2026-03-01",
        server_date=datetime(2026, 3, 4, 18, 30, tzinfo=UTC),
        request_id="rid_42",
    )


def test_page_metadata_absent_or_garbled() -> None:
    page = parse_page("tags", 200, {"Date": "not a date"}, json.dumps(envelope()).encode())
    assert page.api_version is None
    assert page.server_date is None
    assert page.request_id is None
    assert page.records == []
    assert page.has_more is False


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"[]", "JSON array, expected an object"),
        (json.dumps({"data": [], "has_more": False}).encode(), "missing 'object', 'next_cursor'"),
        (json.dumps({**envelope(), "object": "contact"}).encode(), "'object' must be"),
        (json.dumps({**envelope(), "data": {}}).encode(), "'data' must be an array, got object"),
        (json.dumps({**envelope(), "has_more": "false"}).encode(), "'has_more' must be a boolean"),
        (json.dumps({**envelope(), "has_more": 0}).encode(), "'has_more' must be a boolean"),
        (json.dumps({**envelope(), "next_cursor": 5}).encode(), "'next_cursor' must be a string"),
        (json.dumps(envelope(has_more=True)).encode(), "'next_cursor' is null or empty"),
    ],
)
def test_malformed_envelope(body: bytes, match: str) -> None:
    script = Script(httpx.Response(200, content=body, headers={"X-Request-Id": "rid_9"}))
    with make_client(script) as client, pytest.raises(ApiProtocolError, match=match) as info:
        client.fetch_page(ListQuery("companies"))
    message = str(info.value)
    assert "/v2/companies" in message
    assert "rid_9" in message
    assert info.value.resource == "companies"
    assert len(script.requests) == 1  # never retried, never treated as empty


PROXY_PAGE = httpx.Response(
    200, content=b"<html><body>Gateway login</body></html>", headers={"Content-Type": "text/html"}
)


@pytest.mark.parametrize(
    "not_json", [PROXY_PAGE, httpx.Response(200, content=b"")], ids=["html", "empty"]
)
def test_200_that_is_not_json_is_retried_like_a_5xx(
    not_json: httpx.Response, sleeps: list[float]
) -> None:
    script = Script(not_json, not_json, ok())
    observer = Recorder()
    with make_client(script, sleeps=sleeps, observer=observer) as client:
        page = client.fetch_page(ListQuery("contacts"))
    assert page.has_more is False
    assert sleeps == [0.5, 1.0]  # the 5xx backoff
    assert [r[1] for r in observer.retries] == ["200", "200"]
    assert [c for _, c, _ in observer.requests] == ["2xx", "2xx", "2xx"]


def test_200_that_is_never_json_fails_after_the_retries(sleeps: list[float]) -> None:
    script = Script(*[PROXY_PAGE] * 3)
    client = make_client(script, sleeps=sleeps, max_attempts=3)
    with client, pytest.raises(NotJsonError, match="not valid JSON") as info:
        client.fetch_page(ListQuery("contacts"))
    assert isinstance(info.value, ApiProtocolError)
    assert info.value.attempts == 3
    assert info.value.retryable
    assert "after 3 attempt(s)" in str(info.value)
    assert "text/html" in str(info.value)
    assert len(sleeps) == 2


# --------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------


def test_retry_after_seconds_honoured(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(429, headers={"Retry-After": "7"}),
        ok(envelope([{"id": "tag_1"}])),
    )
    observer = Recorder()
    with make_client(script, sleeps=sleeps, observer=observer) as client:
        page = client.fetch_page(ListQuery("tags"))
    assert page.records == [{"id": "tag_1"}]
    assert sleeps == [7.0]
    assert observer.retries == [("tags", "429", 7.0, True)]
    assert [c for _, c, _ in observer.requests] == ["4xx", "2xx"]


def test_retry_after_http_date_honoured_against_server_date(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(
            429,
            headers={
                "Date": "Wed, 04 Mar 2026 18:30:00 GMT",
                "Retry-After": "Wed, 04 Mar 2026 18:30:45 GMT",
            },
        ),
        ok(),
    )
    with make_client(script, sleeps=sleeps) as client:
        client.fetch_page(ListQuery("users"))
    assert sleeps == [45.0]


def test_retry_after_http_date_without_date_header_uses_clock(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(503, headers={"Retry-After": "Wed, 04 Mar 2026 18:30:20 GMT"}),
        ok(),
    )
    clock = lambda: datetime(2026, 3, 4, 18, 30, tzinfo=UTC)  # noqa: E731
    with make_client(script, sleeps=sleeps, clock=clock) as client:
        client.fetch_page(ListQuery("users"))
    assert sleeps == [20.0]


def test_429_without_retry_after_uses_jittered_backoff(sleeps: list[float]) -> None:
    script = Script(httpx.Response(429), httpx.Response(429), ok())
    with make_client(script, sleeps=sleeps, rand=0.25) as client:
        client.fetch_page(ListQuery("users"))
    assert sleeps == [0.25, 0.5]  # 0.25 * 1 s, 0.25 * 2 s


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_retried_then_success(status: int, sleeps: list[float]) -> None:
    script = Script(problem(status, title="Oops"), problem(status, title="Oops"), ok())
    observer = Recorder()
    with make_client(script, sleeps=sleeps, observer=observer) as client:
        page = client.fetch_page(ListQuery("engagements"))
    assert page.has_more is False
    assert sleeps == [0.5, 1.0]
    assert len(script.requests) == 3
    assert [r[1] for r in observer.retries] == [str(status), str(status)]
    assert not any(r[3] for r in observer.retries)
    assert [c for _, c, _ in observer.requests] == ["5xx", "5xx", "2xx"]


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
)
def test_transport_error_retried(exc: Exception, sleeps: list[float]) -> None:
    script = Script(exc, ok())
    observer = Recorder()
    with make_client(script, sleeps=sleeps, observer=observer) as client:
        client.fetch_page(ListQuery("contacts"))
    assert sleeps == [0.5]
    assert observer.requests[0][1] == "error"
    assert observer.retries == [("contacts", type(exc).__name__, 0.5, False)]


def test_transport_error_gives_up_with_last_error(sleeps: list[float]) -> None:
    script = Script(*[httpx.ConnectError("refused")] * 3)
    client = make_client(script, sleeps=sleeps, max_attempts=3)
    with client, pytest.raises(ApiTransportError, match="ConnectError: refused") as info:
        client.fetch_page(ListQuery("contacts"))
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(sleeps) == 2


def test_permanent_transport_error_not_retried(sleeps: list[float]) -> None:
    script = Script(httpx.UnsupportedProtocol("bad scheme"))
    with make_client(script, sleeps=sleeps) as client, pytest.raises(ApiTransportError):
        client.fetch_page(ListQuery("contacts"))
    assert sleeps == []


def test_total_wait_budget_enforced_with_retry_after(sleeps: list[float]) -> None:
    script = Script(*[httpx.Response(429, headers={"Retry-After": "100"})] * 3)
    client = make_client(script, sleeps=sleeps, max_retry_wait_seconds=250)
    with client, pytest.raises(ApiError) as info:
        client.fetch_page(ListQuery("contacts"))
    assert sleeps == [100.0, 100.0]  # the third wait would reach 300 > 250: fail now
    assert info.value.status == 429
    assert info.value.attempts == 3
    assert info.value.retryable
    assert "Retry-After 100.0 s exceeds the remaining retry budget" in str(info.value)
    assert not script.steps


def test_total_wait_budget_enforced_with_jitter(sleeps: list[float]) -> None:
    script = Script(*[problem(503)] * 50)
    client = make_client(script, sleeps=sleeps, rand=0.999, max_retry_wait_seconds=20)
    with client, pytest.raises(ApiError, match="retry budget of 20 s exhausted"):
        client.fetch_page(ListQuery("contacts"))
    assert sum(sleeps) <= 20
    assert len(sleeps) == 4  # ~1 + 2 + 4 + 8 = 15; the next (~16) would cross 20


def test_max_attempts_enforced(sleeps: list[float]) -> None:
    script = Script(*[problem(500, title="Internal")] * 3)
    client = make_client(script, sleeps=sleeps, max_attempts=3)
    with client, pytest.raises(ApiError, match="after 3 attempts") as info:
        client.fetch_page(ListQuery("contacts"))
    assert info.value.status == 500
    assert len(script.requests) == 3
    assert len(sleeps) == 2


def test_retry_logged_at_warning(caplog: pytest.LogCaptureFixture, sleeps: list[float]) -> None:
    script = Script(problem(503, request_id="rid_7"), ok())
    with (
        caplog.at_level(logging.WARNING, logger="producer.api"),
        make_client(script, sleeps=sleeps) as client,
    ):
        client.fetch_page(ListQuery("companies"))
    (record,) = [r for r in caplog.records if r.name == "producer.api.client"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "/v2/companies" in message
    assert "HTTP 503" in message
    assert "attempt 1/" in message
    assert "0.50 s" in message
    assert "rid_7" in message
    assert record.__dict__["resource"] == "companies"
    assert record.__dict__["status"] == 503
    assert record.__dict__["attempt"] == 1
    assert "Authorization" not in message


# --------------------------------------------------------------------------------------
# Non-retryable errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_4xx_not_retried_and_message_is_complete(status: int, sleeps: list[float]) -> None:
    script = Script(
        problem(
            status,
            type="https://app.askelephant.ai/errors/validation_failed",
            title="Validation Failed",
            detail="The request contains invalid fields.",
            request_id="rid_01ABC",
            errors=[
                {"field": "limit", "code": "invalid_range", "message": "limit must be 1..100."},
                {"field": "cursor", "code": "invalid", "message": "cursor expired"},
            ],
        )
    )
    with make_client(script, sleeps=sleeps) as client, pytest.raises(ApiError) as info:
        client.fetch_page(ListQuery("contacts"))
    err = info.value
    message = str(err)
    for part in (
        f"HTTP {status}",
        "Validation Failed",
        "The request contains invalid fields.",
        "limit (invalid_range): limit must be 1..100.",
        "cursor (invalid): cursor expired",
        "request_id=rid_01ABC",
        "/v2/contacts",
    ):
        assert part in message
    assert err.status == status
    assert err.request_id == "rid_01ABC"
    assert [e.field for e in err.errors] == ["limit", "cursor"]
    assert not err.retryable
    assert sleeps == []
    assert len(script.requests) == 1


def test_error_message_without_problem_json(sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(
            404,
            content=b"<html><body>\n  no such route\n</body></html>",
            headers={"Content-Type": "text/html", "X-Request-Id": "rid_h"},
        )
    )
    with make_client(script, sleeps=sleeps) as client, pytest.raises(ApiError) as info:
        client.fetch_page(ListQuery("contacts"))
    message = str(info.value)
    assert "HTTP 404 Not Found" in message
    assert "no such route" in message
    assert "request_id=rid_h" in message


def test_401_and_403_carry_hints() -> None:
    client = make_client(Script(problem(401, title="Unauthorized")))
    with client, pytest.raises(ApiError, match="no 'Bearer'"):
        client.fetch_page(ListQuery("contacts"))
    client = make_client(Script(problem(403, title="Forbidden")))
    with client, pytest.raises(ApiError, match="'contacts:read'"):
        client.fetch_page(ListQuery("contacts"))


# --------------------------------------------------------------------------------------
# Lifecycle and configuration
# --------------------------------------------------------------------------------------


def test_owned_client_closed_injected_client_left_open() -> None:
    with make_client(Script()) as client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        client.fetch_page(ListQuery("contacts"))
    client.close()  # idempotent

    http = httpx.Client(transport=httpx.MockTransport(Script(ok())))
    with ApiClient(Credentials.from_values(api_key=API_KEY), http_client=http) as injected:
        injected.fetch_page(ListQuery("contacts"))
    assert not http.is_closed
    http.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"http_client": "x", "transport": httpx.MockTransport(ok)},
        {"retry_policy": RetryPolicy(), "max_attempts": 3},
        {"max_attempts": 0},
        {"max_retry_wait_seconds": -1},
        {"timeout_seconds": 0},
    ],
)
def test_client_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ApiConfigError):
        ApiClient(Credentials.from_values(api_key=API_KEY), **kwargs)


def test_injected_retry_policy(sleeps: list[float]) -> None:
    policy = RetryPolicy(max_attempts=2, base_delay_s=3.0)
    script = Script(problem(500), problem(500))
    with make_client(script, sleeps=sleeps, retry_policy=policy, rand=1.0) as client:
        assert client.retry_policy is policy
        with pytest.raises(ApiError):
            client.fetch_page(ListQuery("contacts"))
    assert sleeps == [3.0]


def test_an_item_that_is_not_an_object_is_left_to_the_sync_and_its_text_is_kept() -> None:
    body = b'{"object":"list","data":[{"id":"a", "n":1.50},\n 7],"has_more":false,'
    body += b'"next_cursor":null}'
    page = parse_page("contacts", 200, {"content-type": "application/json"}, body)
    assert page.records == [{"id": "a", "n": 1.5}, 7]
    assert page.body == body
