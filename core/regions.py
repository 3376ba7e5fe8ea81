"""Catalog of AWS commercial regions the project can deploy to.

Coordinates are those of the region's metro area; they feed the fiber-latency floor
used by the SLO feasibility check (great-circle distance at 5 us/km one way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    code: str
    city: str
    lat: float
    lon: float
    # Availability Zones every account can use (AWS global infrastructure page); us-west-1 and
    # ap-northeast-1 have more, but accounts created since get fewer.
    az_count: int


_REGIONS = (
    Region("us-east-1", "N. Virginia", 38.95, -77.45, 6),
    Region("us-east-2", "Ohio", 39.96, -83.00, 3),
    Region("us-west-1", "N. California", 37.35, -121.96, 2),
    Region("us-west-2", "Oregon", 45.84, -119.70, 4),
    Region("ca-central-1", "Montreal", 45.50, -73.57, 3),
    Region("sa-east-1", "Sao Paulo", -23.55, -46.63, 3),
    Region("eu-west-1", "Ireland", 53.35, -6.26, 3),
    Region("eu-west-2", "London", 51.51, -0.13, 3),
    Region("eu-west-3", "Paris", 48.86, 2.35, 3),
    Region("eu-central-1", "Frankfurt", 50.11, 8.68, 3),
    Region("eu-north-1", "Stockholm", 59.33, 18.07, 3),
    Region("eu-south-1", "Milan", 45.46, 9.19, 3),
    Region("ap-northeast-1", "Tokyo", 35.68, 139.69, 3),
    Region("ap-northeast-2", "Seoul", 37.57, 126.98, 4),
    Region("ap-northeast-3", "Osaka", 34.69, 135.50, 3),
    Region("ap-southeast-1", "Singapore", 1.35, 103.82, 3),
    Region("ap-southeast-2", "Sydney", -33.87, 151.21, 3),
    Region("ap-south-1", "Mumbai", 19.08, 72.88, 3),
    Region("me-south-1", "Bahrain", 26.07, 50.56, 3),
    Region("af-south-1", "Cape Town", -33.92, 18.42, 3),
)

REGIONS: dict[str, Region] = {r.code: r for r in _REGIONS}

# One-way propagation in fiber: light at ~2/3 c is about 5 microseconds per km.
FIBER_MS_PER_KM = 0.005
_EARTH_RADIUS_KM = 6371.0


def great_circle_km(a: str, b: str) -> float:
    ra, rb = REGIONS[a], REGIONS[b]
    p1, p2 = math.radians(ra.lat), math.radians(rb.lat)
    dp, dl = p2 - p1, math.radians(rb.lon - ra.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def one_way_fiber_ms(a: str, b: str) -> float:
    """Physical floor on one-way latency between two regions (real paths are longer)."""
    return great_circle_km(a, b) * FIBER_MS_PER_KM
