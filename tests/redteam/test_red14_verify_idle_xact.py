"""Red team, round 14, verify rounds, claim 1: "rows that really differ between writers are counted
in DivergedRows within a couple of rounds, whenever every member's agent runs"; the README's one
exception is "a writer that stays behind (an agent down, a transaction held open) leaves the rounds
without keys until it catches up". Is that exception bounded, for the application role?

Attack: a real 3-writer mesh with the real roles; every agent probes (watermarks every 0.25 s) and
runs the real verify thread (VerifySide, round 6 s, margin 1 s, 64 buckets). One row is made to
differ behind the mesh (superuser, session_replication_role = replica) and the rounds count it (the
control phase). Then ONE application-role session on us-west-2 does one of:

- idle_xact: ``BEGIN; SELECT pg_current_xact_id();`` and sits idle in the transaction: no write, no
  lock on anything replicated, nothing but an xid (``SELECT ... FOR SHARE`` of one row does the same:
  test_red14_verify_held.py);
- advisory_no_xact: no transaction at all: it holds the 256 key-bucket advisory locks at session
  level and sits idle (the open red-13 stall), and us-east-1 inserts one new key; us-west-2's apply
  worker waits inside that merge, holding an xid. So a transaction_timeout or
  idle_in_transaction_session_timeout for the app role would not bound this one.

emit_watermark claims no later than the oldest open transaction with an xid
(pg_stat_activity.xact_start, cluster-wide, apply workers included), so us-west-2's watermark
freezes; its peers' applied / peer_applied of it stay older than every later horizon, and
publish_key_details publishes nothing on ANY writer. No timeout ends either session (no
idle_in_transaction_session_timeout, no transaction_timeout, no statement_timeout for the app role),
and nothing in the agent ends them while the lease is valid.

Seen: idle_xact 3 runs of 3, advisory_no_xact 2 runs of 2. Control phase: the diverged row counted
(DivergedRows 1 on every writer) in the first full round. During the attack: every round whose
horizon followed the attack's start (8-9 rounds x 3 writers over 60 s) reported DivergedRows 0 while
the row still differed; on us-east-1 applied[us-west-2] was 60 s old (the session's age; the apply
worker's xact_start in the advisory variant), the other origin 0.03-0.2 s; the newest round with
keys in digest_keys was the control round. Nothing bounds it but the app session's own choice.

Fixed: the digests are taken at the latest horizon of the round grid that every member has applied
(publish_digests reads the watermarks), instead of the round being skipped. Both variants pass
(1 run each): DivergedRows 1 on every writer in all 9 rounds x 3 writers during the attack.
Rows changed after the session began are not compared while it stays open.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from replication.agent.verify_side import VerifySide
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, agent_conn, connect, healthy, long_probe, red_mesh, rounds, settings

REGIONS3 = (EAST, WEST, EU)
BASE = 14_100_000
PERIOD_S, MARGIN_S = 6.0, 1.0
ATTACK_S = 60


class _Aws:
    """Records what the verify thread offers as DivergedRows, with when."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []

    def offer_diverged(self, rows: int) -> None:
        self.seen.append((time.time(), rows))


def _reported_since(aws: dict[str, _Aws], since: float) -> dict[str, list[int]]:
    return {r: [n for t, n in a.seen if t >= since] for r, a in aws.items()}


def _wait_found(aws: dict[str, _Aws], since: float, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(any(n for n in v) for v in _reported_since(aws, since).values()):
            return True
        time.sleep(0.5)
    return False


def _idle_xact(m, app) -> str:
    app.execute("BEGIN")
    xid = app.execute("SELECT pg_current_xact_id()").fetchone()[0]
    return f"idle in transaction with xid {xid}"


def _advisory(m, app) -> str:
    # no transaction: the session only holds the key buckets (tests/redteam/test_red13_marker_advisory_stall.py);
    # the next merge of a new key on WEST waits inside its apply transaction, which holds an xid
    app.execute("SELECT pg_advisory_lock(1718709113, b) FROM generate_series(0, 255) b")
    m.execute(EAST, f"INSERT INTO items (id, v) VALUES ({BASE + 5000}, 'new')")
    return "idle (no transaction) holding the 256 key-bucket advisory locks"


@long_probe
@pytest.mark.parametrize("attack", [_idle_xact, _advisory], ids=["idle_xact", "advisory_no_xact"])
def test_an_idle_app_session_keeps_verify_blind(attack) -> None:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        stop = threading.Event()

        def probing() -> None:
            while not stop.is_set():
                rounds(agents, 1)

        prober = threading.Thread(target=probing, daemon=True)
        prober.start()
        aws = {r: _Aws() for r in REGIONS3}
        sides = [VerifySide(dataclasses.replace(settings(r), verify_every_s=PERIOD_S, verify_margin_s=MARGIN_S,
                                                verify_buckets=64),
                            lambda r=r: agent_conn(m, r), aws[r]).start() for r in REGIONS3]
        app = None
        try:
            m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'same' FROM generate_series(1, 2000) g")
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM items WHERE id > {BASE}", 2000)
            time.sleep(2 * MARGIN_S)
            with m.connect(EU) as c:
                c.execute("SET session_replication_role = replica")
                c.execute("UPDATE items SET v = 'corrupted on eu' WHERE id = %s", (BASE + 7,))
            t0 = time.time()
            found = _wait_found(aws, t0 + PERIOD_S, 4 * PERIOD_S)
            print(f"\ncontrol: diverged row counted on every writer: {found}; {_reported_since(aws, t0)}")
            assert found, "control phase: the rounds never counted the diverged row (probe inconclusive)"

            app = connect(m, WEST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            what = attack(m, app)
            t1 = time.time()
            time.sleep(ATTACK_S)
            # rounds whose horizon is after the BEGIN
            during = _reported_since(aws, t1 + PERIOD_S + MARGIN_S)
            state = m.execute(WEST, "SELECT backend_type, state, now() - xact_start, backend_xid FROM pg_stat_activity "
                                    "WHERE usename = %s OR backend_type = 'logical replication apply worker'",
                              (APP_ROLE,))
            wm = m.execute(EAST, "SELECT origin, clock_timestamp() - at FROM fraiseql_repl.applied ORDER BY 1")
            keys = m.execute(EAST, "SELECT round, node, count(*) FROM fraiseql_repl.digest_keys GROUP BY 1, 2 "
                                   "ORDER BY 1 DESC LIMIT 6")
            still = m.execute(EU, f"SELECT v FROM items WHERE id = {BASE + 7}")
            print(f"app session {what}; sessions on {WEST} {state}; on {EAST} applied lag {wm}; digest_keys {keys}; "
                  f"row on {EU} still {still}")
            print(f"DivergedRows offered during the attack: {during}")
            assert still == [("corrupted on eu",)]
            assert all(v for v in during.values()), "too few rounds ran (probe inconclusive)"
            assert any(any(n for n in v) for v in during.values()), (
                f"an application session on {WEST} ({what}) kept every "
                f"writer's verify rounds blind for {ATTACK_S} s: DivergedRows {during} while a row differs")
        finally:
            if app is not None:
                app.close()
            stop.set()
            prober.join(timeout=10)
            for s in sides:
                s.stop()
