"""Where an operator goes when an alarm fires: one section of docs/runbooks.md per alarm, named here once.

Every alarm's description ends with `Runbook: docs/runbooks.md#<section>` (`describe`), the dashboards
link the same sections, and `tests/test_dashboards.py` checks that each section exists in the page.
"""

from __future__ import annotations

import re

RUNBOOK_PATH = "docs/runbooks.md"

#: Alarm role (the middle of its logical name) -> the heading of its section in docs/runbooks.md.
SECTIONS: dict[str, str] = {
    "replica-lag": "Alarm: replica lag over the RPO (phase A)",
    "replication-lag": "Alarm: replication lag between two writers",
    "agent-down": "Alarm: a fence agent is not running",
    "fenced": "Alarm: a region is fenced",
    "quorum-reduced": "Alarm: quorum reduced",
    "apply-errors": "Alarm: replication apply errors",
    "subscriptions-down": "Alarm: a subscription is down",
    "diverged-rows": "Alarm: rows differ between writers",
    "parked-changes": "Alarm: parked changes",
    "slots-lost": "Alarm: a replication slot is lost",
}


def anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def section(role: str) -> str:
    """`docs/runbooks.md#...` for an alarm role; a role without a section is a programming error."""
    return f"{RUNBOOK_PATH}#{anchor(SECTIONS[role])}"


def describe(text: str, role: str) -> str:
    """An alarm description: what happened, then where to go."""
    return f"{text.rstrip('.')}. Runbook: {section(role)}"
