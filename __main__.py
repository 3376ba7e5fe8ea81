"""Entry point for `pulumi up` / `pulumi preview`: the whole program lives in infra.program."""

from infra.program import run

run()
