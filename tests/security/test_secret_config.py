"""Issue 13, item 10: every documented secret key must be stored as a secret.

`pulumi.Config` knows whether a value was set with `--secret`; the program refuses plain values
before declaring anything, naming the key and the command that fixes it.
"""

from __future__ import annotations

import io

import pytest

from core.config import ConfigError
from infra.__main__ import EXIT_INVALID, plan
from infra.synth import read_stack_file, stack_file, synthesize


@pytest.mark.parametrize("key", ["fraiseql:edge_purge_token", "cloudflare:apiToken", "fraiseql:origin_auth_token"])
def test_a_plaintext_secret_is_refused_by_name_with_the_fix(key):
    config, secrets = read_stack_file(stack_file("phase-c"))
    assert key in secrets
    with pytest.raises(Exception) as info:
        synthesize("phase-c", config=config, secret_keys=[k for k in secrets if k != key])
    message = str(info.value)
    assert f"{key}: is stored in plain text" in message
    assert f"pulumi config set --secret {key}" in message
    assert config[key] not in message  # the value itself is never printed


def test_plan_exits_as_invalid_config(tmp_path):
    text = stack_file("phase-c").read_text().replace(
        "  fraiseql:edge_purge_token:\n    secure: AAABAOfflinePlaceholderForThePurgeToken\n",
        "  fraiseql:edge_purge_token: plain-text-purge-token\n")
    assert "plain-text-purge-token" in text
    f = tmp_path / "Pulumi.phase-c.yaml"
    f.write_text(text)
    out, errs = io.StringIO(), io.StringIO()
    assert plan("phase-c", False, f, out=out, err=errs) == EXIT_INVALID
    err = errs.getvalue()
    assert "fraiseql:edge_purge_token: is stored in plain text" in err and "plain-text-purge-token" not in err


def test_secret_values_pass():
    synthesize("phase-c")  # the shipped stack stores every secret with `secure:`


def test_phase_c_needs_the_origin_token():
    from tests.conftest import config_variant

    with pytest.raises(ConfigError) as info:
        config_variant("phase-c", lambda v: v.pop("origin_auth_token"))
    assert "fraiseql:origin_auth_token: missing" in str(info.value) and "--secret" in str(info.value)
