"""Price books built for tests from the shipped one, so that a test's figures are its own and a price
refresh never breaks it."""

from __future__ import annotations

import copy
import functools
import json
from typing import Any, Iterator

from policies.pricing import DEFAULT_PATH, PriceBook

Path = tuple[str, ...]


def price_rows(node: Any, path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(JSON path, row) for every price row of the raw file, found without the book's own walker."""
    if isinstance(node, dict) and {"usd", "unit", "source"} <= set(node):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from price_rows(value, path + (key,))


@functools.cache
def distinct_prices() -> tuple[PriceBook, dict[Path, float]]:
    """The shipped book with every row given its own price, and those prices by JSON path: a lookup that
    reads a neighbouring row (the other deployment, region, direction or unit) gets a different number.
    Cached: the book is immutable, and callers must not change the dict."""
    data = json.loads(DEFAULT_PATH.read_text())
    usd = {}
    for i, (path, row) in enumerate(price_rows(data)):
        row["usd"] = usd[path] = round(0.001 * (i + 1), 6)
    return PriceBook.from_data(data), usd


def with_figures(data: dict[str, Any], changes: dict[Path, float]) -> PriceBook:
    """A copy of the book's data with chosen figures at these JSON paths (a row's usd, or a plain count)."""
    data = copy.deepcopy(data)
    for path, value in changes.items():
        node = data
        for key in path[:-1]:
            node = node[key]
        if isinstance(node[path[-1]], dict):
            node[path[-1]]["usd"] = value
        else:
            node[path[-1]] = value
    return PriceBook.from_data(data)
