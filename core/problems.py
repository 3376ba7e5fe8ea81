"""Validation errors a person can act on: which key, what is wrong, and a value that would do.

pydantic reports a location (`("regions", 0, "cidr")`), an error kind and its own sentence.
`pydantic_problems` turns each into a `(key, message)` pair against the model that was validated:
the key as the user wrote it (`fraiseql:regions[0].cidr`), a message in plain words, the value that
was given, and an example from the field (its documented example, its default, or its first allowed
choice). An unknown key gets the closest known one. The stack config (core/config.py), the price book
(policies/pricing/schema.py) and the conflict policy `ops schema` reads (ops/schema.py) all report
through it.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from typing import Annotated, Any, Literal, Optional, Sequence, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined

#: A key (as the user wrote it) and what is wrong with it, with a fix.
Problem = tuple[str, str]

#: pydantic's marker in a location for a dict's key (rather than its value).
DICT_KEY = "[key]"
_SHOWN = 60  # characters of a wrong value quoted back


def key_path(loc: Sequence[Any], prefix: str = "") -> str:
    """`("regions", 0, "cidr")` -> `regions[0].cidr`, after `prefix` (`fraiseql:` joins without a dot)."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != DICT_KEY:
            text += ("" if not text or text.endswith(":") else ".") + str(part)
    return text or "(top level)"


def _strip(tp: Any) -> Any:
    """Unwrap Annotated and Optional, so the model can be walked by field name."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(model: type[BaseModel], loc: Sequence[Any]) -> tuple[Any, Optional[FieldInfo]]:
    """The type found at `loc`, and the model field that holds it (None inside a dict's values)."""
    tp: Any = model
    field: Optional[FieldInfo] = None
    for part in loc:
        tp = _strip(tp)
        if _is_model(tp):
            field = next((f for name, f in tp.model_fields.items() if (f.alias or name) == part), None)
            if field is None:
                return None, None
            tp = field.annotation
        elif typing.get_origin(tp) in (list, tuple, set, frozenset) and isinstance(part, int):
            tp = typing.get_args(tp)[0]  # an item of the field: the field still describes it
        elif typing.get_origin(tp) is dict:
            key_type, value_type = typing.get_args(tp)
            tp, field = (key_type if part == DICT_KEY else value_type), None
        else:
            return None, None
    return _strip(tp), field


def _choices(tp: Any) -> list[Any]:
    return [a for t in [tp, *typing.get_args(tp)] if typing.get_origin(t) is Literal for a in typing.get_args(t)]


def example(model: type[BaseModel], loc: Sequence[Any]) -> Optional[str]:
    """A valid value for the key at `loc` (JSON): its documented example, its default, or its first choice."""
    _, field = _walk(model, [p for p in loc if p != DICT_KEY])
    if field is None:
        return None
    if field.examples:
        value = field.examples[0]
    elif field.default not in (None, PydanticUndefined) and field.default != []:
        value = field.default
    else:
        choices = _choices(_strip(field.annotation)) or _choices(field.annotation)
        if not choices:
            return None
        value = choices[0]
    if isinstance(loc[-1], int) and isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, BaseModel):
        return None
    return json.dumps(value, default=str)


def _unknown(model: type[BaseModel], loc: Sequence[Any], top_level: Sequence[str]) -> str:
    parent, _ = _walk(model, loc[:-1])
    names = [f.alias or n for n, f in parent.model_fields.items()] if _is_model(parent) else []
    if len(loc) == 1:
        names += list(top_level)
    if not names:
        return "unknown key; remove it"
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean '{close[0]}'? (valid here: {', '.join(names)})"
    return f"unknown key; remove it, or use one of: {', '.join(names)}"


def _expected(err: ErrorDetails) -> str:
    """What the value should have been, in plain words (pydantic's own sentence when no better one)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
              "less_than": ("<", "lt")}
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "expected a whole number"
    if kind in ("float_type", "float_parsing"):
        return "expected a number"
    if kind == "finite_number":
        return "expected a finite number"
    if kind in bounds:
        op, key = bounds[kind]
        bound = ctx.get(key)
        return f"expected a number {op} {bound:g}" if isinstance(bound, (int, float)) else f"expected a number {op} {bound}"
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false"
    if kind == "string_type":
        return "expected text"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "expected non-empty text"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}"
    if kind.startswith("date"):
        return "expected a date written YYYY-MM-DD"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "expected a mapping of keys to values"
    if kind in ("list_type", "tuple_type"):
        return "expected a list"
    return str(err["msg"])


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def message(err: ErrorDetails, model: type[BaseModel], top_level: Sequence[str] = ()) -> str:
    """One error as a message: what is wrong and how to fix it."""
    loc, kind = tuple(err["loc"]), err["type"]
    if kind == "extra_forbidden":
        return _unknown(model, loc, top_level)
    if kind == "missing":
        text = "missing required key; add it"
    elif kind == "value_error" and "error" in (err.get("ctx") or {}):
        text = str(err["ctx"]["error"])
    else:
        text = f"{_expected(err)} (got {_shown(err.get('input'))})"
    value = example(model, loc)
    name = next((str(p) for p in reversed(loc) if not isinstance(p, int) and p != DICT_KEY), "value")
    if value is not None and "e.g." not in text:
        text += f"; e.g. {name}: {value}"
    return text


def pydantic_problems(errors: Sequence[ErrorDetails], model: type[BaseModel], *, prefix: str = "",
                      top_level: Sequence[str] = ()) -> list[Problem]:
    """`ValidationError.errors()` of `model` as (key, message) pairs; keys start with `prefix`.

    `top_level`: further names valid at the top (keys read outside the model, such as secrets), offered
    when an unknown top-level key is close to one.
    """
    return [(key_path(err["loc"], prefix), message(err, model, top_level)) for err in errors]
