"""`python -m ops transition`: phase A -> B on live data, through the runbook's own code.

Real PostgreSQL 18 on loopback plays the stack after the first phase B `pulumi up`: the primary holds
the mesh objects under a transition lease and its fence agent runs with itself as the only member;
us-west-2 and eu-west-1 are physical copies of it (read replicas, `seed_from`), whose agents already
run, not members. Every region keeps writing throughout.

What is not AWS here, and why: RDS cannot run on this machine, so ``promote_read_replica`` is a
small RDS stand-in that promotes the local standby; Lambda configuration is a dict that a simulated
`pulumi up` changes (and the agents roll over to it, as a deploy makes them). Everything else is the
runbook's code: the plan and its check, the preflight, the state file and resuming, the operator
steps and the commands they print, the catch-up, identity, subscriptions, membership waits and the
final verify. The test judges the data: no acknowledged write lost, every writer equal.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drills.agents import AgentTiming, wait_writable
from drills.lifecycle import LocalBackend, _MeshView
from drills.localaws import local_aws
from drills.mesh import MESH_SETTINGS
from drills.nemesis import NEMESIS_POLICY, NEMESIS_SCHEMA, REGIONS_3, Writers
from drills.pg import cluster
from ops.aws import Runtime
from ops.errors import Refused
from ops.outputs import parse_outputs
from ops.transition import AwsBackend, OperatorStep, TransitionOptions, membership_commands, run_transition
from replication.bootstrap import apply
from replication.lifecycle import Runner
from replication.model import Node
from replication.sql import render_local_objects, render_publication

PRIMARY, STANDBY, THIRD = REGIONS_3


class FakeRds:
    """describe_db_instances / promote_read_replica over local servers (RDS cannot run here)."""

    def __init__(self, lb: LocalBackend, replicas: dict[str, str]):
        self.lb, self.replicas = lb, replicas  # identifier -> region of the copies not yet promoted
        self.promoted: list[str] = []

    def describe_db_instances(self, DBInstanceIdentifier: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        region = DBInstanceIdentifier.rsplit("writer-", 1)[1]
        src = f"fraiseql-db-writer-{PRIMARY}" if DBInstanceIdentifier in self.replicas else None
        return {"DBInstances": [{"DBInstanceIdentifier": DBInstanceIdentifier, "DBInstanceStatus": "available",
                                 "ReadReplicaSourceDBInstanceIdentifier": src,
                                 "Endpoint": {"Address": "127.0.0.1", "Port": self.lb.pg[region].port}}]}

    def promote_read_replica(self, DBInstanceIdentifier: str) -> dict[str, Any]:  # noqa: N803
        region = self.replicas.pop(DBInstanceIdentifier)
        self.lb.promote(region)
        self.promoted.append(region)
        return {}


class FakeLambda:
    """get_function_configuration: what each fence function was last deployed with."""

    def __init__(self) -> None:
        self.env: dict[str, dict[str, str]] = {}

    def deploy(self, members: list[str], next_members: list[str]) -> None:
        for r in REGIONS_3:
            self.env[f"fence-{r}"] = {"FRAISEQL_REGIONS": ",".join(members),
                                      **({"FRAISEQL_REGIONS_NEXT": ",".join(next_members)} if next_members else {})}

    def get_function_configuration(self, FunctionName: str) -> dict[str, Any]:  # noqa: N803
        return {"Environment": {"Variables": self.env[FunctionName]}}


class FakeSecrets:
    def get_secret_value(self, SecretId: str) -> dict[str, Any]:  # noqa: N803
        return {"SecretString": json.dumps({"username": "postgres", "password": "unused-locally"})}


class LocalAddresses(AwsBackend):
    """The AWS backend with loopback addresses: RDS endpoints are ports here, and there is no TLS."""

    def __init__(self, lb: LocalBackend, *args: Any) -> None:
        super().__init__(*args)
        self.lb = lb

    def node(self, region: str) -> Node:
        return self.lb.node(region)

    def conninfo(self, subscriber: str, publisher: str) -> str:
        return self.lb.conninfo(subscriber, publisher)


def _outputs(seeding: dict[str, str]) -> Any:
    return parse_outputs({
        "phase": "b",
        "regions": {r: "active" for r in REGIONS_3},
        "writerDbIdentifiers": {r: f"fraiseql-db-writer-{r}" for r in REGIONS_3},
        "writerSecretArns": {PRIMARY: "master-us-east-1"},
        "replicationSecretName": "fraiseql/replication",
        "fenceFunctionNames": {r: f"fence-{r}" for r in REGIONS_3},
        "healthCheckIds": {r: f"hc-{r}" for r in REGIONS_3},
        "routingControlArns": {r: f"arn:aws:route53-recovery-control::123456789012:controlpanel/x/routingcontrol/{r}"
                               for r in REGIONS_3},
        "arcClusterEndpoints": [{"region": "us-east-1", "endpoint": "https://arc.example/v1"}],
        "quorum": 1,
        "quorumMembers": [PRIMARY],
        "seedingRegions": seeding,
        "writerIndexes": {r: i + 1 for i, r in enumerate(REGIONS_3)},
        "replicationLagAlarmArns": {},
        "slo": {"rtoSeconds": 1, "rpoSeconds": 0.1},
    })


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The stack right after the first phase B `pulumi up`, with writers in every region."""
    timing = AgentTiming()
    with local_aws(list(REGIONS_3)) as aws, cluster([PRIMARY], settings=MESH_SETTINGS) as pg:
        for stmt in NEMESIS_SCHEMA:
            pg[PRIMARY].execute(stmt)
        pg[PRIMARY].execute("INSERT INTO nemesis_log SELECT g, 'phase a' FROM generate_series(1, 500) g")
        lb = LocalBackend(pg, REGIONS_3, aws, timing, tmp_path)
        try:
            me = lb.node(PRIMARY)
            with pg[PRIMARY].connect() as c:  # what the bootstrap of a one-writer mesh does
                apply(c, render_local_objects(me, [me], NEMESIS_POLICY, transition_lease_s=600)
                      + render_publication(NEMESIS_POLICY))
            for r in (STANDBY, THIRD):
                pg[r] = pg[PRIMARY].make_standby(r, via_port=lb.link(r, PRIMARY).listen_port)
                pg[r].start()
            lb.start_agents(list(REGIONS_3), [PRIMARY], [])  # the copies' agents run, not members
            lam = FakeLambda()
            lam.deploy([PRIMARY], [])
            rds = FakeRds(lb, {f"fraiseql-db-writer-{r}": r for r in (STANDBY, THIRD)})
            clients = {"rds": rds, "lambda": lam, "secretsmanager": FakeSecrets()}
            rt = Runtime(out=io.StringIO(), client_factory=lambda service, region, endpoint_url=None: clients[service])
            rt.start(json_mode=True)
            yield {"lb": lb, "rt": rt, "lam": lam, "rds": rds, "tmp": tmp_path}
        finally:
            lb.close()


def _run(stack: dict[str, Any], **kw: Any) -> int:
    lb, rt = stack["lb"], stack["rt"]
    opts = TransitionOptions(action="join", state_path=str(stack["tmp"] / "state.json"), timeout_s=120, settle_s=0.5,
                             dsn={r: lb.pg[r].dsn for r in REGIONS_3}, **kw)
    outputs = _outputs({STANDBY: PRIMARY, THIRD: PRIMARY})
    return run_transition(outputs, rt, opts, policy=NEMESIS_POLICY,
                          backend=LocalAddresses(lb, outputs, rt, opts, rt.reporter))


def test_phase_a_to_b_through_the_runbook_with_two_pulumi_ups_loses_nothing(stack: dict[str, Any],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lb, lam = stack["lb"], stack["lam"]
    state = stack["tmp"] / "state.json"
    slots = Runner._slots

    def slots_then_a_verify_round(runner: Runner, st: Any, current: Any) -> None:
        # The primary's agent publishes a verify round between the slots and the promotion (every
        # `verify_every_s`, so sometimes it does): the copies hold those rows and their new
        # subscriptions send them again. Forced here, it once stopped their control links for good.
        slots(runner, st, current)
        lb.pg[PRIMARY].execute("SELECT fraiseql_repl.publish_digests(%s, clock_timestamp() - interval '1 s', 64, 30.0)",
                               (int(time.time() // 30),))

    monkeypatch.setattr(Runner, "_slots", slots_then_a_verify_round)
    with Writers(_MeshView(lb), list(REGIONS_3), pause_s=0.02) as writers:
        time.sleep(1.0)
        t0 = time.monotonic()
        # 1. promotion and seeding, then the operator's turn: the joint membership.
        with pytest.raises(OperatorStep) as waiting:
            _run(stack)
        assert "quorum.next_members[2]' eu-west-1" in str(waiting.value) and "pulumi up" in str(waiting.value)
        assert stack["rds"].promoted == [STANDBY, THIRD]
        saved = json.loads(state.read_text())
        assert saved["plan"][saved["done"]].startswith("membership us-east-1: agents run members us-east-1 | next")
        # The operator's `pulumi up`: the functions get the joint membership and the agents move to it.
        lam.deploy([PRIMARY], list(REGIONS_3))
        lb.set_membership([PRIMARY], list(REGIONS_3))
        # 2. a re-run resumes at the membership step; then the operator's turn again.
        with pytest.raises(OperatorStep) as waiting:
            _run(stack)
        assert "seed_from'" in str(waiting.value) and "pulumi up --refresh" in str(waiting.value)
        lam.deploy(list(REGIONS_3), [])
        lb.set_membership(list(REGIONS_3), [])
        # 3. the last re-run checks the membership and verifies.
        assert _run(stack) == 0
        assert not state.exists()
        try:
            wait_writable(_MeshView(lb), list(REGIONS_3), timeout=60)  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise AssertionError("\n".join([str(exc), *lb.diagnostics()])) from exc
        t_end = time.monotonic()
        time.sleep(1.0)
    acks = writers.snapshot()
    ok = {a.key for a in acks if a.ok}
    for r in REGIONS_3:  # the last writes are still in flight for a moment
        deadline = time.monotonic() + 30
        while True:
            present = {int(k) for (k,) in lb.pg[r].execute("SELECT id FROM nemesis_log")}
            if ok <= present or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ok <= present, f"{len(ok - present)} acknowledged writes missing on {r}"
    primary_acks = sorted(a.t for a in acks if a.ok and a.region == PRIMARY and t0 <= a.t <= t_end)
    gaps = [b - a for a, b in zip([t0, *primary_acks], [*primary_acks, t_end])]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    assert max(gaps) < 2.0, (f"the primary stopped taking writes for {gaps[worst]:.2f} s, "
                             f"{([t0, *primary_acks])[worst] - t0:.2f} s into the transition; "
                             + stack["rt"].out.getvalue()[-3000:])
    for r in (STANDBY, THIRD):
        assert any(a.ok and a.region == r and a.t > t0 for a in acks), f"{r} never became writable"
    events = [json.loads(line) for line in stack["rt"].out.getvalue().splitlines()]
    assert events[-1]["step"] == "result" and events[-1]["data"]["verify"]["diverged_rows"] == 0


def test_a_different_transition_in_progress_is_refused(stack: dict[str, Any]) -> None:
    (stack["tmp"] / "state.json").write_text(json.dumps({"action": "shrink", "members": [PRIMARY], "done": 2,
                                                         "plan": ["drain eu-west-1: something else"]}))
    with pytest.raises(Refused, match="another transition in progress"):
        _run(stack)
    assert stack["rds"].promoted == []


def test_the_plan_is_printed_and_nothing_changes_on_a_dry_run(stack: dict[str, Any]) -> None:
    assert _run(stack, dry_run=True) == 0
    events = [json.loads(line) for line in stack["rt"].out.getvalue().splitlines()]
    assert [e["step"] for e in events if e["status"] == "would"][:3] == ["slots", "marker", "catch-up"]
    assert stack["rds"].promoted == [] and not (stack["tmp"] / "state.json").exists()
    assert stack["lb"].pg[STANDBY].execute("SELECT pg_is_in_recovery()") == [(True,)]


def test_a_primary_without_logical_wal_is_refused_with_the_reboot_to_run(stack: dict[str, Any]) -> None:
    pg = stack["lb"].pg[PRIMARY]
    pg.settings["wal_level"] = "replica"
    pg.restart()
    with pytest.raises(Refused, match="aws rds reboot-db-instance --db-instance-identifier fraiseql-db-writer-us-east-1"):
        _run(stack)
    assert stack["rds"].promoted == []


def test_joining_a_region_that_is_not_a_copy_is_refused_with_what_to_do(stack: dict[str, Any]) -> None:
    with pytest.raises(Refused, match="ap-south-1 not seeding: set `seed_from"):
        _run(stack, regions=("ap-south-1",))


def test_membership_commands_name_every_key_and_refresh_after_promotions() -> None:
    joint = membership_commands(list(REGIONS_3), {STANDBY: PRIMARY, THIRD: PRIMARY}, [PRIMARY], list(REGIONS_3),
                                [PRIMARY])
    assert "pulumi config set --path 'fraiseql:quorum.next_members[1]' us-west-2" in joint
    # The newcomers' controls go On before the joint rule asserts them (it would refuse one at a time).
    assert joint.splitlines()[1] == "  python -m ops region-in us-west-2 eu-west-1 --outputs <outputs.json>"
    assert joint.splitlines()[-2] == "  pulumi up"
    final = membership_commands(list(REGIONS_3), {STANDBY: PRIMARY, THIRD: PRIMARY}, list(REGIONS_3), [], [STANDBY])
    assert "pulumi config rm --path 'fraiseql:regions[1].seed_from'" in final
    assert "pulumi config rm --path 'fraiseql:quorum.next_members'" in final
    assert final.splitlines()[-2] == "  pulumi up --refresh"
