"""A model endpoint's query string, read by one pydantic model in one call and documented as usual.

FastAPI handles each declared query parameter on its own, per request, with several annotation
checks each: measured here with the ASGI app called directly (`python -m benchmarks.query`), four
declared parameters cost 26–37 µs of event-loop CPU per request, and validating the same four with
one pydantic model 0–4 µs. The model endpoints answer thousands of requests a second on one event
loop, so they read their query with `read_query` and publish it in the OpenAPI page with `documented`. A bad value
still answers 422 naming the parameter (`query.k: ...`), through the same handler as FastAPI's.
The page gives each bound under its JSON Schema name (`minimum`), with the value of the setting
that fixes it (`k` at most MAX_K) written in when the app is created (`publish_settings`).
"""

from __future__ import annotations

import copy
import functools
import re
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError, core_schema

from app.serving.metrics import SERVED_MODEL

Query = TypeVar("Query", bound=BaseModel)

# Numbers as people write them in a URL. Pydantic alone also reads "1_0" and " 10" as ten (and
# "10.0" as an integer): a typo would pass for a number.
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
DECIMAL_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def written_as(pattern: re.Pattern[str], example: str) -> BeforeValidator:
    """A query value must match `pattern` before pydantic reads it as a number."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise PydanticCustomError("number_parsing", "Input should be a number written in digits, like {example}",
                                      {"example": example})
        return value

    return BeforeValidator(check)


WholeNumber = Annotated[int, written_as(WHOLE_NUMBER, "10")]
DecimalNumber = Annotated[float, written_as(DECIMAL_NUMBER, "0.25 or 1e-3")]


class QueryModel(BaseModel):
    """Base of every endpoint's query: frozen, and unknown parameters are ignored (as FastAPI does)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def model_field(default: str, description: str) -> Any:
    """The `model` parameter of an endpoint: a store name, `default` when not given."""
    return Field(default, max_length=64, description=description)


class ModelQuery(QueryModel):
    """The parameters every model endpoint takes: which model and which of its versions."""

    model: str = Field(max_length=64, description="A model in /models.")
    version: WholeNumber | None = Field(None, ge=1, description="A specific version; default the served one.")


@functools.cache
def repeated_fields(shape: type[BaseModel]) -> frozenset[str]:
    """The fields of `shape` that take every value of a repeated parameter (`?positive=a&positive=b`)."""
    return frozenset(name for name, field in shape.model_fields.items() if typing.get_origin(field.annotation) is list)


def read_query(request: Request, shape: type[Query], serves: bool = True) -> Query:
    """The request's query string as `shape`, or a 422 naming each bad parameter.

    A parameter given twice takes its last value, as FastAPI does, unless its field is a list.
    Called in the handler, so it runs after FastAPI has read the body: a request with both a bad
    query and a missing upload is told about the upload first. With `serves`, a model query's model
    is recorded as the one serving the request (for the metrics); a no-model baseline passes False."""
    params = request.query_params
    app = request.scope.get("app")  # its settings hold the limits of `at_most_setting` fields
    settings = getattr(app.state, "settings", None) if app is not None else None
    values: dict[str, Any] = dict(params)
    for name in repeated_fields(shape):
        if name in values:
            values[name] = params.getlist(name)
    try:
        query = shape.model_validate(values, context={"settings": settings})
    except ValidationError as error:
        problems = [{**problem, "loc": ("query", *problem["loc"])} for problem in error.errors(include_url=False)]
        raise RequestValidationError(problems) from None
    if serves and isinstance(query, ModelQuery):
        record_served_model(request, query.model)
    return query


def record_served_model(request: Request, model: str) -> None:
    """The model this request is served by, for the metrics (app/middleware.py): the one its query
    names, the last if repeated, else the route's default."""
    request.scope.setdefault("state", {})[SERVED_MODEL] = model


@dataclass(frozen=True, eq=False)  # hashed by identity: a type hint holding it is hashed
class Published:
    """A check on a query value once parsed, and what the OpenAPI page says of it (`schema`)."""

    check: Callable[[Any, ValidationInfo], Any]
    schema: dict[str, Any]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        return {**handler(schema), **self.schema}


# A schema's bounds that only the settings know, {"maximum": "MAX_K"}: `publish_settings` writes
# their values in when the app is created (the query models are built before any settings exist).
SETTING_BOUNDS = "x-setting-bounds"


def setting_bound(keyword: str, setting: str) -> dict[str, Any]:
    """A JSON Schema bound (`maximum`, `maxItems`) whose value is the setting `setting`."""
    return {SETTING_BOUNDS: {keyword: setting}}


def at_most_setting(setting: str) -> Published:
    """A query field's upper bound fixed by a setting (`k` at most `MAX_K`): checked with the other
    parameters, so every bad one is named in the same 422 (`read_query` passes the settings)."""

    def check(value: Any, info: ValidationInfo) -> Any:
        settings = (info.context or {}).get("settings")
        limit = getattr(settings, setting, None)
        if value is not None and limit is not None and value > limit:
            raise PydanticCustomError("less_than_equal", "Input should be less than or equal to {limit} (the {setting} "
                                      "setting)", {"limit": limit, "setting": setting})
        return value

    return Published(check, setting_bound("maximum", setting))


def one_of(allowed: Collection[int]) -> Published:
    """A whole number that must be one of `allowed` (`flip_views`: 1, 2 or 4), published as an enum."""
    wording = ", ".join(map(str, allowed))

    def check(value: Any, info: ValidationInfo) -> Any:
        if value is not None and value not in allowed:
            raise PydanticCustomError("enum", "Input should be one of {allowed}", {"allowed": wording})
        return value

    return Published(check, {"enum": list(allowed)})


# JSON Schema's names for pydantic's bounds. pydantic publishes the bound of a type that has a
# validator of its own (WholeNumber, DecimalNumber) under its Python keyword, `ge`, which JSON
# Schema tools (schemathesis, client generators) ignore.
JSON_SCHEMA_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def standard_bounds(schema: dict[str, Any]) -> dict[str, Any]:
    """A query field's JSON schema with its bounds, and its members' and items', as JSON Schema names them."""
    named = {JSON_SCHEMA_BOUNDS.get(key, key): value for key, value in schema.items()}
    if "anyOf" in named:
        named["anyOf"] = [standard_bounds(member) for member in named["anyOf"]]
    if isinstance(named.get("items"), dict):
        named["items"] = standard_bounds(named["items"])
    return named


def _write_settings(node: Any, settings: Any) -> None:
    """Every SETTING_BOUNDS under `node` replaced by the bounds it names, with their values."""
    if isinstance(node, list):
        for value in node:
            _write_settings(value, settings)
    elif isinstance(node, dict):
        for keyword, setting in node.pop(SETTING_BOUNDS, {}).items():
            node[keyword] = getattr(settings, setting)
        for value in node.values():
            _write_settings(value, settings)


def publish_settings(openapi: dict[str, Any], settings: Any) -> dict[str, Any]:
    """A copy of an app's OpenAPI document with the values of its settings' bounds written in (`k`'s
    maximum is MAX_K). A copy: routes share their `documented` parameters with every other app."""
    published = copy.deepcopy(openapi)
    _write_settings(published, settings)
    return published


def documented(shape: type[BaseModel], **extra: Any) -> dict[str, Any]:
    """`openapi_extra` for a route: `shape`'s fields as its query parameters (merged with `extra`)."""
    schema = shape.model_json_schema()
    if "$defs" in schema:  # a nested model or an enum would leave a dangling $ref in the page
        raise TypeError(f"{shape.__name__}: query fields must be plain values or lists of them")
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema["properties"].items():
        field = standard_bounds(field)
        description = field.pop("description", None)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": field}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return {**extra, "parameters": parameters}
