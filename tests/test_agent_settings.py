"""The fence agent's settings travel in one environment, written by the stack and read by the agent
through one definition (replication/agent/settings.py): what ``to_env`` writes, ``from_env`` reads back
as it was; what the stack deploys is exactly that environment (tests/test_phase_b.py)."""

from __future__ import annotations

import dataclasses

import pytest

from replication.agent.settings import ENV_KEYS, Settings

THREE = ("us-east-1", "us-west-2", "eu-west-1")


def minimal(**kw: object) -> Settings:
    base: dict[str, object] = dict(region="us-east-1", regions=THREE, probe_s=5.0, stale_after_s=15.0, lease_s=15.0,
                                   unfence_after=3, db_host="writer.example", db_port=5432, db_name="fraiseql",
                                   db_sslmode="verify-full", db_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:a")
    return Settings(**{**base, **kw})  # type: ignore[arg-type]


def every_field_set() -> Settings:
    """No field at its default, numbers that are not whole among them."""
    return minimal(
        probe_s=0.3, stale_after_s=2.7, lease_s=1.1, unfence_after=2, db_port=6543, db_sslrootcert="/opt/rds-ca/x.pem",
        routing_control_arn="arn:rc", fence_rule_arn="arn:rule", health_path="/healthz",
        arc_endpoints=({"region": "us-west-2", "endpoint": "https://a.example/v1"},
                       {"region": "eu-west-1", "endpoint": "https://b.example/v1"}),
        metrics_every_s=0.3, handoff_wait_s=150, stop_margin_s=0.5, watermark_every_s=1, maintenance_every_s=5,
        verify_every_s=30, verify_margin_s=2, verify_buckets=64, verify_max_keys=500,
        regions_next=THREE + ("eu-central-1", "ap-northeast-1"),
    )


@pytest.mark.parametrize("settings", [minimal(), every_field_set()], ids=["defaults", "every-field-set"])
def test_what_to_env_writes_from_env_reads_back(settings: Settings) -> None:
    assert Settings.from_env(settings.to_env()) == settings


def test_every_setting_has_its_own_variable() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(ENV_KEYS) == sorted(names)
    assert len(set(ENV_KEYS.values())) == len(names)
    assert set(every_field_set().to_env()) == set(ENV_KEYS.values())


def test_the_next_members_are_written_only_during_a_membership_change() -> None:
    # ops/transition.py reads the deployed FRAISEQL_REGIONS_NEXT to tell a change in progress
    assert ENV_KEYS["regions_next"] not in minimal().to_env()
    assert every_field_set().to_env()[ENV_KEYS["regions_next"]] == ",".join(THREE + ("eu-central-1", "ap-northeast-1"))


def test_whole_numbers_are_written_without_a_fraction() -> None:
    env = minimal(probe_s=5.0, handoff_wait_s=150).to_env()
    assert (env["FRAISEQL_PROBE_INTERVAL_SECONDS"], env["FRAISEQL_HANDOFF_WAIT_SECONDS"], env["FRAISEQL_DB_PORT"]) == \
        ("5", "150", "5432")


def test_an_environment_with_only_the_required_variables_gets_the_defaults() -> None:
    # what the drills and older stacks write: staleness and lease default to three probes
    env = {"FRAISEQL_REGION": "us-east-1", "FRAISEQL_REGIONS": ",".join(THREE), "FRAISEQL_PROBE_INTERVAL_SECONDS": "2",
           "FRAISEQL_UNFENCE_AFTER": "3", "FRAISEQL_DB_HOST": "h", "FRAISEQL_DB_PORT": "5432", "FRAISEQL_DB_NAME": "d",
           "FRAISEQL_DB_SECRET_ARN": "arn"}
    s = Settings.from_env(env)
    assert (s.stale_after_s, s.lease_s, s.db_sslmode, s.db_sslrootcert, s.regions_next) == (6.0, 6.0, "require", "", ())
    assert s == minimal(probe_s=2.0, stale_after_s=6.0, lease_s=6.0, db_host="h", db_name="d", db_sslmode="require",
                        db_secret_arn="arn")


def test_a_timing_the_quorum_cannot_work_with_is_refused_on_both_sides() -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        minimal(lease_s=5.0)
    env = minimal().to_env()
    env["FRAISEQL_LEASE_SECONDS"] = "5"
    with pytest.raises(ValueError, match="lease_seconds"):
        Settings.from_env(env)


def test_the_agents_verify_defaults_are_the_configs() -> None:
    # The stack passes fraiseql:replication.verify_* to every agent; an agent whose environment
    # lacks them (an older stack) runs with the same values.
    from core.config import ReplicationConfig

    fields = ReplicationConfig.model_fields
    assert (fields["verify_buckets"].default, fields["verify_max_keys"].default) == (
        Settings.__dataclass_fields__["verify_buckets"].default, Settings.__dataclass_fields__["verify_max_keys"].default)
    assert Settings.from_env({**minimal().to_env(), "FRAISEQL_VERIFY_MAX_KEYS": ""}).verify_max_keys == \
        Settings.__dataclass_fields__["verify_max_keys"].default
