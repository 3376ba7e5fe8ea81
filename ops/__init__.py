"""Operations runbooks for the FraiseQL stacks: `python -m ops {status,failover,region-out,region-in,purge}`.

Every command reads the stack outputs (`pulumi stack output --json --show-secrets`) rather than any
hard-coded identifier, logs one line per step (or one JSON object per line with `--json`), and exits
with one of the codes in `ops.errors`. `docs/runbooks.md` is the operator's guide.
"""
