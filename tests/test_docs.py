"""The documentation: one home per topic, generated pages that are never stale, a README in the order a
user needs it, and links that land somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.runbook import anchor
from drills.results import RESULTS, problems, sections
from infra.paths import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]


def test_generated_pages_match_the_code():
    from infra.docs import stale

    assert [p.relative_to(REPO).as_posix() for p in stale()] == [], "run `python -m infra docs` and commit the pages"


def test_the_readme_is_short_and_in_the_order_a_user_needs_it():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    heads = re.findall(r"^## (.+)$", text, flags=re.M)
    assert heads == ["Quick start (no cloud account needed)", "The journey from an existing deployment",
                     "Deploying for real", "Layout", "Links"]
    what_it_is = text.split("\n## ", 1)[0]
    assert "phase" in what_it_is and "<!-- generated: phases -->" in what_it_is


#: What a user reads besides the pages: the stack files they copy (examples/ links to the phases') and the
#: component READMEs the links lead to.
READ_TOO = [*sorted(REPO.glob("Pulumi.*.yaml")), *sorted((REPO / "examples").glob("*.yaml")),
            REPO / "replication" / "README.md", REPO / "worker" / "README.md"]


def test_the_brief_is_named_once_and_called_that():
    text = "\n".join(p.read_text() for p in [*PAGES, *READ_TOO] if p.exists())
    assert len(re.findall(r"original brief", text, flags=re.I)) == 1
    found = re.findall(r".*(?:\bthe seed\b|\bseed's\b|\bseed (?:targets|budget)\b).*", text, flags=re.I)
    assert not found, f"the brief is called the brief: {found}"


@pytest.mark.parametrize("topic", [
    "**preflight**: every member decodes WAL logically",      # the transition runbook's steps
    "`status` shows, for any phase",                          # what status reads
    "Exit codes as for every runbook, plus **4",              # transition's exit codes
    "| 0 | done: every step succeeded",                        # the runbooks' exit codes
    "**Quorum and fencing: why there is no split brain.**",   # the lead's claims
    "| `PULUMI_ACCESS_TOKEN` |",                               # CI secrets
    "## Trust boundaries",
])
def test_each_topic_has_one_home(topic):
    homes = [p.relative_to(REPO).as_posix() for p in PAGES if topic in p.read_text()]
    assert len(homes) == 1, homes


def test_no_measured_figure_outside_the_results_page():
    """Figures come from the drills and benchmarks, into docs/results.md; prose points there."""
    for page in PAGES:
        if page == RESULTS:
            continue
        text = page.read_text()
        for pattern in (r"acknowledged writes lost, 0 rows", r"took \d+\.\d+ s", r"0 of \d{3,} acknowledged writes lost"):
            assert not re.search(pattern, text), f"{page.name}: {pattern}"


def test_the_results_page_is_written_by_its_recorders_only():
    text = RESULTS.read_text()
    assert problems(text) == []
    assert "adopt-quick" in sections(text), "the adoption drill records its figures (python -m drills adopt --record)"
    for key, (_, body) in sections(text).items():
        assert re.search(r"`python (-m drills|bench/)[^`]*--record[^`]*`, recorded \d{4}-\d\d-\d\d on ", body), key


def test_a_hand_edit_of_a_result_is_caught(tmp_path):
    from drills.results import record_section

    page = tmp_path / "results.md"
    record_section("demo", "Demo", "python -m drills demo --record", text="a figure: 1.0 s", path=page)
    assert problems(page.read_text()) == []
    page.write_text(page.read_text().replace("1.0 s", "0.1 s"))
    assert problems(page.read_text()) == ["section demo: its text changed after its recorder wrote it (re-run the command it names)"]


def _headings(path: Path) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_lands_on_a_file_and_a_heading(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target}"
        if fragment and dest.suffix == ".md":
            assert fragment in _headings(dest), f"{page.name}: {target} (no such heading)"


def test_every_examples_file_the_docs_name_exists():
    text = "\n".join(p.read_text() for p in PAGES)
    named = set(re.findall(r"examples/[\w.-]+\.yaml", text))
    assert named and all((REPO / n).exists() for n in named), sorted(n for n in named if not (REPO / n).exists())
    assert named == {f"examples/{p.name}" for p in (REPO / "examples").glob("*.yaml")}


def test_the_runbook_examples_use_files_that_exist():
    """`--policy` and `--config-file` name a stack file of the repository, never one that is not there."""
    text = "\n".join(p.read_text() for p in PAGES)
    for flag, target in re.findall(r"(--policy|--config-file) (\S+)", text):
        target = target.strip("`")
        if "<" in target or target.startswith("FILE"):
            continue
        assert (REPO / target).exists(), f"{flag} {target}"
