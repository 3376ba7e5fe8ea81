"""The project's price book. ``policies/prices.json`` is data; this package is the only code that reads
or writes it.

- ``schema``: the file's pydantic models and validation messages;
- ``book``: :class:`PriceBook`, typed lookups that raise :class:`MissingPrice` (never 0);
- ``refresh``: the Price List API refresh, ``python -m policies.pricing refresh``. The pack never
  imports it.
"""

from policies.pricing.book import DEFAULT_PATH, MissingPrice, PriceBook
from policies.pricing.schema import PriceBookError, dumps

__all__ = ["DEFAULT_PATH", "MissingPrice", "PriceBook", "PriceBookError", "dumps"]
