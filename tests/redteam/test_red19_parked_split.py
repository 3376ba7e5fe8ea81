"""Red team 19, claim 2 (round 12's): "two regions that cannot replicate to each other never both
acknowledge writes past detection_bound, whatever SQL the application role runs".

Attack: launder an application's row lock through eu's apply worker, at both ends, and let FQ006
parking keep the east<->west links "receiving" while every write to the held rows parks.

* East's application locks ``ke``; west's locks ``kw`` (``SELECT ... FOR UPDATE``, no write).
* eu commits ``ta`` (update rows R, then ``ke``) and ``tb`` (update rows S, then ``kw``).
  At east, eu's apply worker X locks R and waits on ``ke`` (tb queues behind). At west, ta goes
  through, and eu's apply worker locks S and waits on ``kw``.
* West's application updates R (free at west), east's updates S (free at east). At east, west's
  changes of R meet rows held by an *apply* worker: ``held_by_apply`` says yes, they park (FQ006)
  after 200 ms and the link reads on, so east keeps hearing west (and west east). Before FQ006, the
  merge waited and the link went silent: the fence saw it.

eu's links go silent (an application holds its workers), so eu is fenced and {east, west} is the
majority: both writable, each acknowledging writes while the other's acknowledged writes to R / S
never arrive. The probe FAILS while, in some round, both acknowledge a write later than the bound
after a write of the other that they have not received.

A regression test: FQ006 parking (5db9266, a merge that met a row another link's apply held
parked the change) was withdrawn the same day for this and the other red team 19 findings; it
failed 3 of 3 runs with it and passes without (replication/README.md, "Data links").

    .venv/bin/python -m pytest -q -s tests/redteam/test_red19_parked_split.py -p no:cacheprovider
"""

from __future__ import annotations

import time
from typing import Any

from drills.mesh import REGIONS, Mesh
from replication.agent import probe
from replication.agent.maintenance import maintain
from replication.quorum import detection_bound
from replication.roles import APP_ROLE
from tests.redteam.harness import (
    EAST,
    EU,
    LEASE_S,
    PROBE_S,
    STALE_S,
    WEST,
    connect,
    healthy,
    key,
    set_up,
    settings,
    wait_present,
    writable,
)

N = 5  # rows in R and in S


def test_parked_changes_keep_a_link_heard_while_both_ends_take_writes_the_other_never_gets(m: Mesh, agents: Any) -> None:
    b = detection_bound(3, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S, max_link_delay_s=0.05)
    healthy(agents)
    conns = {r: connect(m, r, APP_ROLE, autocommit=True) for r in REGIONS}
    R, S = [key() for _ in range(N)], [key() for _ in range(N)]
    ke, kw = key(), key()
    set_up(agents, lambda: conns[EU].execute("INSERT INTO items (id, v) SELECT x, 'seed' FROM unnest(%s::int[]) x",
                                             ([*R, *S, ke, kw],)))
    healthy(agents)
    for r in (EAST, WEST):
        assert wait_present(m, r, kw) and wait_present(m, r, S[-1]), "the seed rows did not replicate"
    holders = {}
    for r, k in ((EAST, ke), (WEST, kw)):
        holders[r] = connect(m, r, APP_ROLE)
        holders[r].execute("SELECT v FROM items WHERE id = %s FOR UPDATE", (k,))

    def tx(rows: list[int], last: int) -> Any:
        def run() -> None:
            with conns[EU].transaction():
                conns[EU].execute("UPDATE items SET v = 'eu' WHERE id = ANY(%s)", (rows,))
                conns[EU].execute("UPDATE items SET v = 'eu' WHERE id = %s", (last,))
        return run

    set_up(agents, tx(R, ke), "ta")
    set_up(agents, tx(S, kw), "tb")
    deadline = time.monotonic() + 20  # ta applied at west (its worker then holds S for tb)
    while not m.execute(WEST, "SELECT count(*) = %s FROM items WHERE id = ANY(%s) AND v = 'eu'", (N + 1, [*R, ke]))[0][0]:
        assert time.monotonic() < deadline, "ta did not apply at west"
        for r in REGIONS:
            probe(agents[r], settings(r), control_on=True)
        time.sleep(PROBE_S)

    acked: dict[str, list[tuple[float, str]]] = {EAST: [], WEST: []}
    seq = 0
    both: list[float] = []
    n_rounds = both_writable = 0
    t0 = time.monotonic()
    parked_max = {EAST: 0, WEST: 0}
    try:
        while time.monotonic() - t0 < 4 * b + 8:
            last = {r: probe(agents[r], settings(r), control_on=True) for r in REGIONS}
            n_rounds += 1
            both_writable += writable(last[EAST]) and writable(last[WEST])
            if n_rounds % 10 == 0:
                for r in (EAST, WEST):
                    maintain(agents[r], full=False)  # the agent's retry: the rows are still held
            late = {}
            for r, other, rows in ((WEST, EAST, R), (EAST, WEST, S)):
                seq += 1
                val = f"{r}-{seq}"
                try:
                    conns[r].execute("UPDATE items SET v = %s WHERE id = %s", (val, rows[seq % N]))
                except Exception:  # noqa: BLE001 - refused: fenced
                    continue
                now = time.monotonic()
                acked[r].append((now, val))
                # the other's acknowledged writes, older than the bound, not here yet
                seen = {v for (v,) in m.execute(r, "SELECT v FROM items WHERE id = ANY(%s)", ([*R, *S],))}
                # a write to a row counts as received when that row here shows it or a later write of the other
                missing = [t for t, v in acked[other] if now - t > b and not any(
                    s.startswith(other + "-") and int(s.split("-")[-1]) >= int(v.split("-")[-1])
                    and _same_row(v, s, R if other == WEST else S) for s in seen)]
                if missing:
                    late[r] = now - min(missing)
            for r in (EAST, WEST):
                parked_max[r] = max(parked_max[r], m.execute(r, "SELECT count(*) FROM fraiseql_repl.parked "
                                                                 "WHERE sqlstate = 'FQ006'")[0][0])
            if len(late) == 2:
                both.append(min(late.values()))
            time.sleep(PROBE_S)
    finally:
        for h in holders.values():
            h.rollback()
            h.close()
        for c in conns.values():
            c.close()
    worst = max(both, default=0.0)
    print(f"\nbound {b:.2f} s; {n_rounds} rounds, east and west both writable in {both_writable}; "
          f"{len(acked[WEST])} west writes, {len(acked[EAST])} east writes; FQ006 parked up to {parked_max}; "
          f"in {len(both)} rounds both acknowledged a write up to {worst:.1f} s after one of the other's "
          "they had not received")
    assert not both, (f"east and west both acknowledged writes up to {worst:.1f} s after a write of the other they had "
                      f"not received (bound {b:.2f} s): the other's changes park (FQ006) behind eu's apply worker, "
                      "which an application session holds, and the link still counts as receiving")


def _same_row(v: str, s: str, rows: list[int]) -> bool:
    """Writes cycle over the rows by seq: v and s are writes to the same row."""
    return int(v.split("-")[-1]) % N == int(s.split("-")[-1]) % N
