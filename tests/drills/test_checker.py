"""The nemesis checker judges histories correctly, including ones it must reject."""

from __future__ import annotations

from drills.checker import Ack, Cut, both_writable_windows, check, merge_intervals


def acks(region: str, times: list[float], key0: int) -> list[Ack]:
    return [Ack(region, key0 + i, t, True) for i, t in enumerate(times)]


def test_merge_intervals() -> None:
    assert merge_intervals([(5, 6), (1, 3), (2, 4)]) == [(1, 4), (5, 6)]


def test_a_region_that_stops_at_once_gives_a_short_window() -> None:
    history = acks("a", [0.5, 1.0, 10.2, 11.0], 0) + acks("b", [0.5, 1.0, 1.4], 100)
    (w,) = both_writable_windows(history, [Cut("a", "b", 1.0, 12.0)])
    assert abs(w.window_s - 0.4) < 1e-9  # b stopped 0.4 s after the cut; a kept going


def test_both_sides_writing_through_a_cut_is_a_violation() -> None:
    history = acks("a", [2.0, 6.0, 9.0], 0) + acks("b", [2.5, 7.0, 8.0], 100)
    verdict = check(history, [Cut("b", "a", 1.0, 10.0)], bound_s=3.0,
                    present={"a": set(range(3)) | {100, 101, 102}, "b": set(range(3)) | {100, 101, 102}},
                    digests={"a": "x", "b": "x"})
    assert not verdict.ok and verdict.violations[0].window_s == 7.0


def test_a_lost_acknowledged_write_and_a_diverged_node_are_reported() -> None:
    history = acks("a", [1.0], 7)
    verdict = check(history, [], 1.0, present={"a": {7}, "b": set()}, digests={"a": "x", "b": "x", "c": "y"})
    assert verdict.lost == [("a", 7, "b")]
    assert verdict.diverged_nodes == ["c"]
    assert not verdict.ok


def test_refused_writes_do_not_count_as_writable() -> None:
    history = acks("a", [5.0], 0) + [Ack("b", 9, 5.0, False, "25006")]
    (w,) = both_writable_windows(history, [Cut("a", "b", 1.0, 6.0)])
    assert w.window_s == 0.0


def test_registers_catch_a_resurrected_delete_and_a_lost_reinsert() -> None:
    from drills.checker import Op, check_registers

    ops = [Op("a", 1, "v1", 1.0, "ok"), Op("a", 1, None, 2.0, "ok"),          # deleted for good
           Op("a", 2, "v1", 1.0, "ok"), Op("a", 2, None, 2.0, "ok"), Op("a", 2, "v2", 3.0, "ok"),  # re-inserted
           Op("a", 3, "v1", 1.0, "ok"), Op("a", 3, None, 2.0, "info")]         # maybe deleted
    good = {"n1": {2: "v2", 3: "v1"}, "n2": {2: "v2"}}
    assert check_registers(ops, good) == []
    bad = check_registers(ops, {"n1": {1: "v1", 2: "v2"}, "n2": {3: "v1"}})
    assert {(f.key, f.node, f.kind) for f in bad} == {(1, "n1", "resurrected delete"), (2, "n2", "lost write")}
    # a write refused before commit did not happen: the earlier value stands
    assert check_registers([Op("a", 4, "v1", 1.0, "ok"), Op("a", 4, "v2", 2.0, "fail")], {"n": {4: "v1"}}) == []
    assert check_registers([Op("a", 4, "v1", 1.0, "ok"), Op("a", 4, "v2", 2.0, "fail")], {"n": {4: "v2"}}) != []
