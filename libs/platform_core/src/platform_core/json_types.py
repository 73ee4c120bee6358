"""The JSON value type, for specs and results that cross process boundaries. Declared with
TypeAliasType so pydantic can validate it recursively."""

from __future__ import annotations

from typing_extensions import TypeAliasType

JsonValue = TypeAliasType(
    "JsonValue",
    "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None",
)
JsonObject = dict[str, JsonValue]
