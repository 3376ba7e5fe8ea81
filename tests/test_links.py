"""A data link is heard while it delivers (replication/links.py): its newest watermark is fresh, or its
apply worker works on what it receives. Nobody outside replication can keep a link behind and still
be heard; nothing replication does itself (a large transaction, a wait behind another link's apply)
makes a healthy link unheard.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replication.links import Progress, Worker, delivering, progress

STALE = 3.0
APPLY, OTHER_APPLY, THIRD_APPLY, APP = 101, 102, 103, 900


def workers(*ws: Worker) -> dict[int, Worker]:
    return {w.pid: w for w in ws}


def test_a_worker_applying_what_it_receives_is_working() -> None:
    assert progress(APPLY, workers(Worker(APPLY, 0.1)), STALE) is Progress.WORKING


def test_a_silent_worker_is_stalled_and_so_is_a_missing_one() -> None:
    assert progress(APPLY, workers(Worker(APPLY, STALE + 0.1)), STALE) is Progress.STALLED
    assert progress(APPLY, workers(Worker(APPLY, None)), STALE) is Progress.STALLED
    assert progress(None, workers(Worker(OTHER_APPLY, 0.1)), STALE) is Progress.STALLED
    assert progress(APPLY, workers(Worker(OTHER_APPLY, 0.1)), STALE) is Progress.STALLED


def test_a_worker_waiting_on_an_application_session_is_held_however_recently_it_received() -> None:
    assert progress(APPLY, workers(Worker(APPLY, 0.0, (APP,))), STALE) is Progress.HELD


def test_waiting_behind_another_links_apply_is_working_while_that_apply_works() -> None:
    busy = Worker(OTHER_APPLY, 0.2)
    assert progress(APPLY, workers(Worker(APPLY, 10 * STALE, (OTHER_APPLY,)), busy), STALE) is Progress.WORKING


def test_waiting_behind_a_silent_apply_is_stalled() -> None:
    silent = Worker(OTHER_APPLY, 10 * STALE)
    assert progress(APPLY, workers(Worker(APPLY, 0.0, (OTHER_APPLY,)), silent), STALE) is Progress.STALLED


def test_an_application_anywhere_on_the_chain_holds_the_link() -> None:
    chain = workers(Worker(APPLY, 0.0, (OTHER_APPLY,)), Worker(OTHER_APPLY, 0.0, (THIRD_APPLY,)),
                    Worker(THIRD_APPLY, 0.0, (APP,)))
    assert progress(APPLY, chain, STALE) is Progress.HELD


def test_apply_workers_waiting_on_each_other_are_stalled() -> None:
    cycle = workers(Worker(APPLY, 0.0, (OTHER_APPLY,)), Worker(OTHER_APPLY, 0.0, (APPLY,)))
    assert progress(APPLY, cycle, STALE) is Progress.STALLED


def test_two_paths_to_one_working_apply_are_not_a_cycle() -> None:
    diamond = workers(Worker(APPLY, 0.0, (OTHER_APPLY, THIRD_APPLY)), Worker(OTHER_APPLY, 0.0, (THIRD_APPLY,)),
                      Worker(THIRD_APPLY, 0.1))
    assert progress(APPLY, diamond, STALE) is Progress.WORKING


def test_a_fresh_watermark_delivers_whatever_the_worker_does() -> None:
    for p in Progress:
        assert delivering(delivered_age_s=STALE, worker=p, stale_after_s=STALE)


def test_a_link_behind_by_more_than_stale_delivers_only_while_its_worker_works() -> None:
    assert delivering(delivered_age_s=STALE + 0.1, worker=Progress.WORKING, stale_after_s=STALE)
    assert not delivering(delivered_age_s=STALE + 0.1, worker=Progress.HELD, stale_after_s=STALE)
    assert not delivering(delivered_age_s=STALE + 0.1, worker=Progress.STALLED, stale_after_s=STALE)
    assert not delivering(delivered_age_s=None, worker=Progress.HELD, stale_after_s=STALE)


pids = st.integers(min_value=1, max_value=8)
graphs = st.dictionaries(
    pids,
    st.tuples(st.one_of(st.none(), st.floats(min_value=0, max_value=10)), st.lists(st.integers(1, 12), max_size=3)),
    min_size=1,
)


@given(graphs, pids)
def test_held_exactly_when_a_session_outside_replication_is_reachable_through_waits(raw, start) -> None:
    ws = {p: Worker(p, age, tuple(bs)) for p, (age, bs) in raw.items()}
    reach, todo = set(), [start] if start in ws else []
    while todo:
        p = todo.pop()
        if p in reach:
            continue
        reach.add(p)
        todo.extend(ws[p].blockers if p in ws else ())
    outside = any(p not in ws for p in reach)
    assert (progress(start, ws, STALE) is Progress.HELD) == outside


@given(graphs, pids)
def test_working_never_depends_on_a_silent_worker(raw, start) -> None:
    ws = {p: Worker(p, age, tuple(bs)) for p, (age, bs) in raw.items()}
    if progress(start, ws, STALE) is Progress.WORKING:
        reach, todo = set(), [start]
        while todo:
            p = todo.pop()
            if p not in reach:
                reach.add(p)
                todo.extend(ws[p].blockers)
        ends = [ws[p] for p in reach if not ws[p].blockers]
        assert ends and all(w.receipt_age_s is not None and w.receipt_age_s <= STALE for w in ends)
