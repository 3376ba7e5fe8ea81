"""One formatter for validation errors (core/problems.py): every input the project validates names the
key as the user wrote it, says what is wrong and offers a value that would do, the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.config import ConfigError
from core.problems import key_path, pydantic_problems
from ops.errors import UsageError
from ops.schema import load_policy
from policies.pricing import PriceBook, PriceBookError
from tests.conftest import config_variant


class _Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(ge=1, le=8, examples=[2])
    mode: Literal["fast", "safe"] = "safe"
    name: str = Field(examples=["db-1"])

    @field_validator("name")
    @classmethod
    def _lower(cls, v: str) -> str:
        if v != v.lower():
            raise ValueError(f"'{v}' has capitals; write it in lower case, e.g. name: {v.lower()}")
        return v


class _Root(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[_Leaf]
    extra: Optional[dict[str, _Leaf]] = None


def problems(data: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        _Root.model_validate(data)
    return dict(pydantic_problems(info.value.errors(), _Root, prefix="app:", top_level=["token"]))


def test_keys_read_as_written():
    assert key_path(("items", 0, "size"), "app:") == "app:items[0].size"
    assert key_path(("regions", "US East", "[key]")) == "regions.US East"
    assert key_path((), "") == "(top level)"


def test_each_kind_of_error_says_what_is_wrong_and_what_would_do():
    found = problems({"items": [{"size": 9, "mode": "slow", "name": "DB"}, {"size": "two", "nmae": "x"}], "tokne": 1})
    assert found["app:items[0].size"] == "expected a number <= 8 (got 9); e.g. size: 2"
    assert found["app:items[0].mode"] == "expected 'fast' or 'safe' (got \"slow\"); e.g. mode: \"safe\""
    assert found["app:items[0].name"] == "'DB' has capitals; write it in lower case, e.g. name: db"  # the model's own fix
    assert found["app:items[1].size"] == "expected a whole number (got \"two\"); e.g. size: 2"
    assert found["app:items[1].name"] == "missing required key; add it; e.g. name: \"db-1\""
    assert found["app:items[1].nmae"] == "unknown key; did you mean 'name'? (valid here: size, mode, name)"
    assert found["app:tokne"] == "unknown key; did you mean 'token'? (valid here: items, extra, token)"


def test_a_wrong_value_is_quoted_back_but_not_at_any_length():
    found = problems({"items": "x" * 500})
    assert found["app:items"].startswith("expected a list (got \"xxx") and len(found["app:items"]) < 100


# --- the three inputs report through it ------------------------------------------------------

BAD_TABLES = [{"table": "tb_post", "strategy": "magic"}]


def test_the_stack_config_and_ops_schema_say_the_same_about_the_same_replication_block(tmp_path):
    with pytest.raises(ConfigError) as info:
        config_variant("phase-b", lambda v: v["replication"].update(tables=BAD_TABLES))
    (key, text), = [p for p in info.value.problems if "tables" in p[0]]
    assert key == "fraiseql:replication.tables[0].strategy" and text.startswith("expected 'lww', 'counter'")

    stack_file = tmp_path / "Pulumi.x.yaml"
    stack_file.write_text(json.dumps({"config": {"fraiseql:replication": {"tables": BAD_TABLES}}}))
    with pytest.raises(UsageError) as usage:
        load_policy(str(stack_file))
    assert f"{key}: {text}" in str(usage.value)


def test_the_price_book_reports_its_first_problem_by_json_path(tmp_path):
    data = json.loads(PriceBook.load().dumps())
    data["regions"]["us-east-1"]["nat_gateway"]["hourly"]["usd"] = "0.045"
    path: Path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PriceBookError) as info:
        PriceBook.load(path)
    assert str(info.value) == f'{path}: regions.us-east-1.nat_gateway.hourly.usd: expected a number (got "0.045")'
