"""Issue 13 item 1: every log group the stack owns expires, and every function logs into one of them.

Lambda creates `/aws/lambda/<name>` itself, with no retention, when a function logs before a group
exists; each function here names a declared group (`logging_config`) instead.
"""

from __future__ import annotations

import pytest

from tests.conftest import synthesized


@pytest.mark.parametrize("stack", ["phase-a", "phase-b", "phase-c"])
def test_every_function_logs_into_a_group_with_retention(stack, request):
    syn = synthesized(request, stack)
    groups = {g.inputs["name"]: g for g in syn.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert groups and all(g.inputs.get("retentionInDays") for g in groups.values())
    functions = syn.of_type("aws:lambda/function:Function")
    assert functions
    for fn in functions:
        target = (fn.inputs.get("loggingConfig") or {}).get("logGroup")
        assert target in groups, f"{fn.name} logs into an undeclared group {target!r}"
        assert groups[target].region == fn.region
