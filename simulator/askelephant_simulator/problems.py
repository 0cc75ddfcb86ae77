"""Problem+json errors (docs/askelephant-api.md §3.1) raised while handling a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

# docs/askelephant-api.md §3.1: `type` is a stable category URL; the docs example is
# https://app.askelephant.ai/errors/validation_failed.  Other slugs are simulator choices.
ERROR_TYPE_BASE: Final = "https://app.askelephant.ai/errors/"


@dataclass
class ProblemError(Exception):
    """An error to render as ``application/problem+json`` (docs/askelephant-api.md §3.1)."""

    status: int
    slug: str
    detail: str
    title: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    def body(self, request_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": ERROR_TYPE_BASE + self.slug,
            "title": self.title or HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            "request_id": request_id,
        }
        if self.errors:
            out["errors"] = self.errors
        return out


def bad_parameter(
    name: str, code: str, message: str, slug: str = "invalid_parameter"
) -> ProblemError:
    """400 for a malformed query parameter (docs/askelephant-api.md §3.2: 400 = malformed
    request/query)."""
    return ProblemError(
        400,
        slug,
        "The request contains invalid query parameters.",
        title="Bad Request",
        errors=[{"field": name, "code": code, "message": message}],
    )
