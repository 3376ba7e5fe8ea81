"""Make a throw-away server check passwords for some roles (drills' servers trust everyone)."""

from __future__ import annotations

from drills.pg import PgNode


def require_passwords(node: PgNode, *roles: str) -> None:
    """scram-sha-256 for ``roles`` on loopback, ahead of the trust lines; reloads the server."""
    hba = node.data_dir / "pg_hba.conf"
    lines = [f"host {db} {role} 127.0.0.1/32 scram-sha-256" for role in roles for db in ("all", "replication")]
    hba.write_text("\n".join(lines) + "\n" + hba.read_text())
    node.execute("SELECT pg_reload_conf()")
