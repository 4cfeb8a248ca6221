"""What the admin API accepts: one pydantic model per request body and query, validated in one
place (`parse_body`, `parse_query`), so every handler refuses bad input the same way: 400 with
the offending field named, never a traceback. The OpenAPI description is built from these
same models (`openapi.py`).

Bodies are parsed by pydantic's JSON parser (not `json.loads`): nesting deeper than its
recursion limit, numbers beyond any range, invalid UTF-8 and lone surrogates ("\\ud800") are
JSON errors there, reported like any other.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from rdpbalancer.config.types import MAX_WEIGHT

MAX_PAGE = 1000  # entries per page of GET /api/v1/sticky
MAX_OFFSET = 10**9
MAX_NAME_CHARS = 512  # a user, server or pool name in a body (mstsc cookies are far shorter)

Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class InputError(Exception):
    """The request is not what the API takes; the message names the field."""


class ApiInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateBody(ApiInput):
    state: Literal["ready", "drain", "maint"]


class WeightBody(ApiInput):
    weight: StrictInt = Field(ge=0, le=MAX_WEIGHT)


class StickyBody(ApiInput):
    server: Name
    pool: Name | None = None


class FlushBody(ApiInput):
    server: Name


class ImportEntry(ApiInput):
    user: Name
    server: Name
    pool: Name | None = None


class ImportBody(ApiInput):
    """Entries are checked one by one (`ImportEntry`): a bad one is reported, the others land."""

    entries: list[Any] = Field(json_schema_extra={"items": ImportEntry.model_json_schema()})


class StickyQuery(ApiInput):
    server: str | None = None
    limit: int = Field(default=100, ge=0, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ExplainQuery(ApiInput):
    user: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    source: str = "0.0.0.0"
    token: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    listener: str | None = Field(default=None, max_length=MAX_NAME_CHARS)

    @field_validator("source")
    @classmethod
    def _an_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("an IPv4 or IPv6 address") from None


M = TypeVar("M", bound=ApiInput)


def parse_body(model: type[M], raw: bytes) -> M:
    if not raw.strip():
        raw = b"{}"  # no body: the model says what is missing
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InputError(describe(exc, "body")) from None


def parse_query(model: type[M], query: dict[str, str]) -> M:
    try:
        return model.model_validate(query)
    except ValidationError as exc:
        raise InputError(describe(exc, "query")) from None


def check_entry(item: Any) -> ImportEntry:
    try:
        return ImportEntry.model_validate(item)
    except ValidationError as exc:
        raise InputError(describe(exc, "entry")) from None


def describe(exc: ValidationError, where: str) -> str:
    """One line per problem: `body.weight: Input should be less than or equal to 256`."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in (where, *error["loc"]))
        lines.append(f"{path}: {error['msg']}")
    return "; ".join(lines)
