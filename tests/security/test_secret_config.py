"""Issue 13, item 10: every documented secret key must be stored as a secret.

`pulumi.Config` knows whether a value was set with `--secret`; the program refuses plain values
before declaring anything, naming the key and the command that fixes it.
"""

from __future__ import annotations

import io

import pytest
import yaml

from core.config import PHASE_SECRETS, SECRET_KEYS, ConfigError
from infra.__main__ import EXIT_INVALID, plan
from infra.synth import REPO, SECRET_PLACEHOLDER, read_stack_file, stack_file, synthesize

PLAIN = "plain-text-token-0123456789abcdef0123456789"


@pytest.mark.parametrize("key", ["fraiseql:edge_purge_token", "cloudflare:apiToken", "fraiseql:origin_auth_token"])
def test_a_plaintext_secret_is_refused_by_name_with_the_fix(key):
    config, secrets = read_stack_file(stack_file("phase-c"))
    config[key] = PLAIN
    with pytest.raises(Exception) as info:
        synthesize("phase-c", config=config, secret_keys=[k for k in secrets if k != key])
    message = str(info.value)
    assert f"{key}: is stored in plain text" in message
    assert f"pulumi config set --secret {key}" in message
    assert PLAIN not in message  # the value itself is never printed


def test_plan_exits_as_invalid_config(tmp_path):
    text = stack_file("phase-c").read_text().replace(
        "config:\n", "config:\n  fraiseql:edge_purge_token: plain-text-purge-token\n", 1)
    assert "plain-text-purge-token" in text
    f = tmp_path / "Pulumi.phase-c.yaml"
    f.write_text(text)
    out, errs = io.StringIO(), io.StringIO()
    assert plan("phase-c", False, f, out=out, err=errs) == EXIT_INVALID
    err = errs.getvalue()
    assert "fraiseql:edge_purge_token: is stored in plain text" in err and "plain-text-purge-token" not in err


def test_stack_files_commit_no_secret():
    """Issue 20: a committed `secure:` value only one secrets provider can read (or a placeholder no
    provider can) makes every other backend's stack fail; the real stack gets `config set --secret`."""
    for path in sorted(REPO.glob("Pulumi.*.yaml")):
        config = yaml.safe_load(path.read_text())["config"]
        assert [k for k, v in config.items() if isinstance(v, dict) and "secure" in v] == [], path.name
        assert not {f"fraiseql:{k}" for k in SECRET_KEYS} & set(config), path.name


def test_the_offline_plan_stands_in_for_the_secrets_the_phase_needs(phase_c):
    config, secrets = read_stack_file(stack_file("phase-c"))
    needed = {f"fraiseql:{k}" for k in PHASE_SECRETS["c"]}
    assert needed <= set(secrets) and all(config[k] == SECRET_PLACEHOLDER for k in needed)
    assert phase_c.resources  # the shared synthesis: it plans with the stand-ins, as `scripts/plan.sh phase-c` does
    for stack in ("phase-a", "phase-b"):
        _, secrets = read_stack_file(stack_file(stack))
        assert secrets == [], stack


def test_phase_c_needs_the_origin_token():
    from tests.conftest import config_variant

    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: v.pop("origin_auth_token"))
    assert "fraiseql:origin_auth_token: missing" in str(info.value) and "--secret" in str(info.value)
