"""What the nemesis's clients do while the faults run, Jepsen style: small clients, each recording its
history for the checker (``drills.checker``).

* ``Registers``: keys that only their own region writes, set and deleted and set again, so the
  checker can tell a resurrected delete or a lost re-insert from a legitimate merge;
* ``Clashes``: rows in every region competing for a few unique values;
* ``Family``: parents and children (``ON DELETE CASCADE``) across regions, parents deleted while
  children arrive;
* ``Adversary``: the application role trying every way around the fence it has the rights for,
  each commit recorded as an acknowledged write for the both-writable checker.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import psycopg

from drills.checker import Ack, Op
from drills.mesh import Mesh
from replication.sql import FENCE_SQLSTATE

__all__ = ["Adversary", "Clashes", "Client", "Family", "Registers", "WORKLOAD_SCHEMA", "WORKLOAD_TABLES"]

WORKLOAD_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE nemesis_kv (k bigint PRIMARY KEY, v text)",
    "CREATE TABLE nemesis_people (id bigint PRIMARY KEY, email text UNIQUE, v text)",
    "CREATE TABLE nemesis_parent (id bigint PRIMARY KEY, v text)",
    "CREATE TABLE nemesis_child (id bigint PRIMARY KEY, parent bigint NOT NULL REFERENCES nemesis_parent (id) "
    "ON DELETE CASCADE, v text)",
)
WORKLOAD_TABLES: tuple[str, ...] = ("nemesis_kv", "nemesis_people", "nemesis_parent", "nemesis_child")

#: Refused before it could commit (fenced, a retry the database asked for, a key or value taken
#: locally): the operation did not happen.
REFUSED = {FENCE_SQLSTATE, "40001", "40P01", "23505", "23503", "55000"}


def outcome(exc: psycopg.Error) -> str:
    return "fail" if getattr(exc, "sqlstate", None) in REFUSED else "info"


class Client:
    """One thread per region, each with its own connection; ``step`` does one operation."""

    def __init__(self, m: Mesh, regions: Sequence[str], *, pause_s: float = 0.02, seed: int = 0,
                 connect: Optional[Callable[[str], psycopg.Connection[Any]]] = None) -> None:
        self.m, self.regions, self.pause_s = m, list(regions), pause_s
        self.connect = connect or (lambda r: m.connect(r))
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(r, i, random.Random(seed * 100 + i)), daemon=True,
                                          name=f"{type(self).__name__}-{r}") for i, r in enumerate(self.regions)]

    def __enter__(self) -> "Client":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, region: str, index: int, rng: random.Random) -> None:
        conn: Optional[psycopg.Connection[Any]] = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self.connect(region)
                    conn.execute("SET statement_timeout = '5s'")
                self.step(conn, region, index, rng)
            except psycopg.Error:
                if conn is not None and (conn.broken or conn.closed):
                    conn = None
            self._stop.wait(self.pause_s)
        if conn is not None:
            conn.close()

    def step(self, conn: psycopg.Connection[Any], region: str, index: int, rng: random.Random) -> None:
        raise NotImplementedError


class Registers(Client):
    """Each region sets and deletes its own keys (``nemesis_kv``), one operation at a time."""

    KEYS = 12

    def __init__(self, m: Mesh, regions: Sequence[str], **kw: Any) -> None:
        super().__init__(m, regions, **kw)
        self.ops: list[Op] = []
        self._n = itertools.count(1)

    def key(self, index: int, i: int) -> int:
        return (index + 1) * 10**6 + i

    def step(self, conn: psycopg.Connection[Any], region: str, index: int, rng: random.Random) -> None:
        k = self.key(index, rng.randrange(self.KEYS))
        value = None if rng.random() < 0.4 else f"{region}:{next(self._n)}"
        try:
            if value is None:
                conn.execute("DELETE FROM nemesis_kv WHERE k = %s", (k,))
            else:
                conn.execute("INSERT INTO nemesis_kv (k, v) VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                             (k, value))
            result = "ok"
        except psycopg.Error as exc:
            result = outcome(exc)
            raise
        finally:
            with self.lock:
                self.ops.append(Op(region, k, value, time.monotonic(), result))

    def history(self) -> list[Op]:
        with self.lock:
            return list(self.ops)

    def final(self) -> dict[str, dict[int, Optional[str]]]:
        return {r: {int(k): v for k, v in self.m.execute(r, "SELECT k, v FROM nemesis_kv")} for r in self.m.nodes}


class Clashes(Client):
    """Rows in every region competing for eight e-mail addresses: inserts, moves and deletes."""

    def step(self, conn: psycopg.Connection[Any], region: str, index: int, rng: random.Random) -> None:
        row = (index + 1) * 10**6 + rng.randrange(30)
        email = f"user{rng.randrange(8)}@example.com"
        roll = rng.random()
        if roll < 0.5:
            conn.execute("INSERT INTO nemesis_people (id, email, v) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE "
                         "SET email = EXCLUDED.email, v = EXCLUDED.v", (row, email, region))
        elif roll < 0.8:
            conn.execute("UPDATE nemesis_people SET email = %s WHERE id = %s", (email, row))
        else:
            conn.execute("DELETE FROM nemesis_people WHERE id = %s", (row,))


class Family(Client):
    """Parents in every region (each key used once: a deleted parent is not inserted again, see
    replication/README.md), children of any region's parents, parents deleted (cascading) while other
    regions add children to them and edit those children."""

    def __init__(self, m: Mesh, regions: Sequence[str], **kw: Any) -> None:
        super().__init__(m, regions, **kw)
        self._ids = itertools.count(1)

    def step(self, conn: psycopg.Connection[Any], region: str, index: int, rng: random.Random) -> None:
        roll = rng.random()
        if roll < 0.3:
            conn.execute("INSERT INTO nemesis_parent (id, v) VALUES (%s, %s)", ((index + 1) * 10**8 + next(self._ids), region))
        elif roll < 0.65:
            found = conn.execute("SELECT id FROM nemesis_parent ORDER BY random() LIMIT 1").fetchone()
            if found:
                conn.execute("INSERT INTO nemesis_child (id, parent, v) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                             ((index + 1) * 10**7 + rng.randrange(10**6), found[0], region))
        elif roll < 0.85:
            conn.execute("UPDATE nemesis_child SET v = %s WHERE id = (SELECT id FROM nemesis_child ORDER BY random() "
                         "LIMIT 1)", (f"{region}:{next(self._ids)}",))
        else:
            conn.execute("DELETE FROM nemesis_parent WHERE id = (SELECT id FROM nemesis_parent WHERE id / 100000000 = %s "
                         "ORDER BY random() LIMIT 1)", (index + 1,))


class Adversary(Client):
    """The application role, trying what its grants allow to commit after its region was fenced:
    checks run early and the commit held back, a setting the check once trusted, snapshots taken
    before a revoke, savepoints. Every commit that returned is an acknowledged write."""

    TRICKS = ("immediate_then_idle", "placeholder", "repeatable_read", "serializable", "savepoint")

    def __init__(self, m: Mesh, regions: Sequence[str], *, hold_s: float, role: str, **kw: Any) -> None:
        super().__init__(m, regions, pause_s=0.05, connect=self._connect, **kw)
        self.hold_s, self.role = hold_s, role
        self.acks: list[Ack] = []
        self.tried: dict[str, int] = {}
        self._keys = itertools.count(8 * 10**12)

    def _connect(self, region: str) -> psycopg.Connection[Any]:
        return psycopg.connect(f"host=127.0.0.1 port={self.m.pg[region].port} dbname={self.m.pg[region].dbname} "
                               f"user={self.role}", autocommit=True, connect_timeout=5)

    def step(self, conn: psycopg.Connection[Any], region: str, index: int, rng: random.Random) -> None:
        trick = rng.choice(self.TRICKS)
        key = next(self._keys)
        hold = rng.uniform(0, self.hold_s)
        with self.lock:
            self.tried[trick] = self.tried.get(trick, 0) + 1
        try:
            if trick == "repeatable_read" or trick == "serializable":
                conn.execute("BEGIN ISOLATION LEVEL " + ("REPEATABLE READ" if trick == "repeatable_read" else "SERIALIZABLE"))
                conn.execute("SELECT count(*) FROM nemesis_kv")
                self._stop.wait(hold)
                conn.execute("INSERT INTO nemesis_log (id, region) VALUES (%s, %s)", (key, region))
            else:
                conn.execute("BEGIN")
                if trick == "placeholder":
                    conn.execute("SET LOCAL fraiseql_repl.lease_checked = '2999-01-01 00:00:00+00'")
                conn.execute("INSERT INTO nemesis_log (id, region) VALUES (%s, %s)", (key, region))
                if trick == "savepoint":
                    conn.execute("SAVEPOINT s")
                    conn.execute("INSERT INTO nemesis_log (id, region) VALUES (%s, %s)", (next(self._keys), region))
                    conn.execute("RELEASE SAVEPOINT s")
                if trick == "immediate_then_idle":
                    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
                self._stop.wait(hold)
            conn.execute("COMMIT")
            ack = Ack(region, key, time.monotonic(), True)
        except psycopg.Error as exc:
            ack = Ack(region, key, time.monotonic(), False, getattr(exc, "sqlstate", None))
            if not conn.closed and not conn.broken:
                conn.execute("ROLLBACK")
            else:
                raise
        with self.lock:
            self.acks.append(ack)

    def snapshot(self) -> list[Ack]:
        with self.lock:
            return list(self.acks)
