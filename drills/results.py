"""docs/results.md: what the drills and benchmarks measured, written by them (`--record`), never by hand.

Each run that records replaces its own section, between markers that carry the SHA-256 of the
section's body: `tests/test_docs.py` fails when a body no longer matches its digest (an edit by hand),
or when a section has no recorder. The figures elsewhere in the documentation point here.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Iterable, Optional

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"

HEADER = """# Measured results

Written by the drills and benchmarks, never by hand: each section is replaced by the command it names
(`--record`), with the date and the machine, and `tests/test_docs.py` fails when a section's text no
longer matches the digest its recorder wrote. Run a command again to refresh its section. Timings are
from shared 2-core machines with no cloud: they measure the mechanisms, not AWS or Cloudflare.
"""

_SECTION = re.compile(r"<!-- results:(?P<key>[a-z0-9-]+) sha256=(?P<digest>[0-9a-f]{64}) -->\n(?P<body>.*?)"
                      r"<!-- /results:(?P=key) -->\n", re.S)


def digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def sections(text: str) -> dict[str, tuple[str, str]]:
    """key -> (digest written, body) of every section of the page."""
    return {m["key"]: (m["digest"], m["body"]) for m in _SECTION.finditer(text)}


def problems(text: str) -> list[str]:
    """Sections whose body does not match their digest, and marker text outside a whole section."""
    out = [f"section {k}: its text changed after its recorder wrote it (re-run the command it names)"
           for k, (d, body) in sections(text).items() if digest(body) != d]
    rest = _SECTION.sub("", text)
    if "<!-- results:" in rest or "<!-- /results:" in rest:
        out.append("a results marker without its pair: re-run the recorder of that section")
    return out


def markdown_table(rows: Iterable[Any]) -> str:
    """Rows of `drills.report.Row` (metric, measured, target, met, why) as a Markdown table."""
    out = ["| metric | measured | target | met | how |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        cells = [str(c).replace("|", "\\|") for c in (r.metric, r.measured, r.target, met, r.why)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def machine() -> str:
    pg = ""
    try:
        import subprocess

        from drills.pg import PG_BIN

        out = subprocess.run([str(PG_BIN / "postgres"), "-V"], capture_output=True, text=True, timeout=30).stdout
        pg = f", PostgreSQL {out.split()[-1]}" if out.strip() else ""
    except Exception:  # noqa: BLE001 - the machine line is informative only
        pg = ""
    return f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, Python {platform.python_version()}{pg}"


def record_section(key: str, title: str, command: str, rows: Optional[Iterable[Any]] = None, *, text: str = "",
                   path: Path = RESULTS, when: Optional[str] = None) -> Path:
    """Replace (or add) section `key` of the results page with what a run measured."""
    stamp = when or time.strftime("%Y-%m-%d")
    body = f"## {title}\n\n`{command}`, recorded {stamp} on {machine()}.\n\n"
    if rows is not None:
        body += markdown_table(rows) + "\n"
    if text:
        body += ("\n" if rows is not None else "") + text.rstrip() + "\n"
    block = f"<!-- results:{key} sha256={digest(body)} -->\n{body}<!-- /results:{key} -->\n"
    page = path.read_text() if path.exists() else HEADER
    found = sections(page)
    if key in found:
        page = _SECTION.sub(lambda m: block if m["key"] == key else m.group(0), page)
    else:
        blocks = {k: f"<!-- results:{k} sha256={d} -->\n{b}<!-- /results:{k} -->\n" for k, (d, b) in found.items()}
        blocks[key] = block
        page = HEADER + "".join("\n" + blocks[k] for k in sorted(blocks))
    path.write_text(page)
    return path
