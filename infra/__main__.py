"""`python -m infra plan --stack phase-a [--json]`: the offline plan; `python -m infra diff --from A --to B`:
what a `pulumi up` from one stack file to the next would do, and what it costs.

`plan` runs the real program under Pulumi mocks with the stack file's config (no cloud credentials, no
Pulumi CLI), then the policy pack over what it declared. Exit codes: 0 planned and compliant,
1 a mandatory policy violation or a program error, 2 invalid config or stack file.

`diff` plans both files under one stack name and lists what is created, updated, replaced and deleted,
and the monthly cost change line by line. Exit codes: 0 no protected resource is lost, 1 a protected
resource would be replaced or deleted (or lose `protect`), 2 invalid config or stack file.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pulumi

from core.config import ConfigError
from infra.pack import PackResult, run_pack
from infra.synth import StackFileError, Synthesis, synthesize

EXIT_OK, EXIT_VIOLATION, EXIT_INVALID = 0, 1, 2
#: `cloudflare-ips` could not compare (no network, a proxy, an answer that is not Cloudflare's ranges):
#: not the same as "stale" (1), which means the file must change.
EXIT_UNCHECKED = 3
EXIT_ERROR = 1  # the program itself failed (not the config): as Python does for an uncaught exception
# The SDK keeps an Output and four futures per property of every resource alive to the end of the run, so
# under CPython's default thresholds (700, 10, 10) the collector re-walks that growing heap in repeated full
# collections: a third of phase B's plan. Little of it is garbage (peak memory is unchanged): collect rarely.
PLAN_GC_THRESHOLD = (50_000, 20, 20)


def _render_text(syn: Synthesis) -> str:
    lines = [
        f"stack {syn.stack} (phase {syn.outputs.get('phase', '?')}): "
        f"{len(syn.resources)} resources in {len(syn.components)} components"
    ]
    groups = syn.grouped()
    for region in sorted(groups, key=lambda r: (r == "global", r)):
        comps = groups[region]
        lines.append(f"\n{region}  ({sum(sum(c.values()) for c in comps.values())})")
        for comp in sorted(comps):
            counts = comps[comp]
            lines.append(f"  {comp}  ({sum(counts.values())})")
            for typ, count in sorted(counts.items()):
                lines.append(f"    {count:>3}  {typ}")
    protected = [r.name for r in syn.resources if r.protect]
    lines.append(f"\nprotected (pulumi protect): {', '.join(sorted(protected)) or 'none'}")
    lines.append("\noutputs:")
    for key, value in syn.outputs.items():
        lines.append(f"  {key}: {json.dumps(value, default=str)}")
    return "\n".join(lines)


def _render_pack(result: PackResult) -> str:
    lines = ["", "SLO floors (what this topology can reach):"]
    lines += [f"  {b.describe()}" for b in result.bounds] or ["  (no manifest)"]
    lines += ["", "monthly cost estimate:"]
    if result.cost is not None:
        lines += ["  " + l for l in result.cost.render().splitlines()]
    mandatory = result.mandatory
    advisory = [v for v in result.violations if not v.mandatory]
    lines += ["", f"policy pack: {len(mandatory)} mandatory violation(s), {len(advisory)} advisory"]
    for v in mandatory + advisory:
        head, *rest = v.message.splitlines()
        lines.append(f"  [{v.level}] {v.policy}: {head}")
    return "\n".join(lines)


def _as_json(syn: Synthesis, result: PackResult) -> dict[str, Any]:
    return {
        "stack": syn.stack,
        "phase": syn.outputs.get("phase"),
        "total": len(syn.resources),
        "resources": [
            {
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "region": r.region,
                "component": syn.component_of(r),
                "protect": r.protect,
            }
            for r in syn.resources
        ],
        "groups": {
            region: {comp: dict(counts) for comp, counts in comps.items()} for region, comps in syn.grouped().items()
        },
        "outputs": syn.outputs,
        "slo": [
            {"name": b.name, "unit": b.unit, "target": b.target, "floor": b.floor, "feasible": b.feasible,
             "arithmetic": b.arithmetic}
            for b in result.bounds
        ],
        "cost": None if result.cost is None else {
            "total_usd": result.cost.total,
            "budget_usd": result.cost.budget_usd,
            "lines": [vars(l) for l in result.cost.lines],
        },
        "violations": [vars(v) for v in result.violations],
    }


def _config_problem(exc: Optional[BaseException]) -> Optional[str]:
    """The validation message if `exc` (or what it wraps) is a config problem."""
    seen: set[int] = set()
    # Pulumi's wait_for_rpcs re-raises an exception as its own cause: stop at any exception seen before.
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConfigError, StackFileError)):
            return str(exc)
        if isinstance(exc, pulumi.RunError) and "invalid stack config" in str(exc):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def _rare_collections() -> Iterator[None]:
    before = gc.get_threshold()
    gc.freeze()  # the imported modules outlive the plan: no collection needs to walk them again
    gc.set_threshold(*PLAN_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def plan(stack: str, as_json: bool, config_file: Optional[Path] = None, out=sys.stdout, err=sys.stderr) -> int:
    with _rare_collections():
        return _plan(stack, as_json, config_file, out, err)


def _plan(stack: str, as_json: bool, config_file: Optional[Path], out, err) -> int:
    try:
        syn = synthesize(stack, path=config_file)
    except Exception as e:  # noqa: BLE001 - config errors arrive wrapped by the Pulumi runtime
        message = _config_problem(e)
        if message is None:
            traceback.print_exception(e, file=err)
            print(f"plan failed: the program raised {type(e).__name__}: {e}", file=err)
            return EXIT_ERROR
        print(message, file=err)
        return EXIT_INVALID
    result = run_pack(syn.registrations)
    if as_json:
        json.dump(_as_json(syn, result), out, indent=2, default=str)
        out.write("\n")
    else:
        print(_render_text(syn) + _render_pack(result), file=out)
    return EXIT_VIOLATION if result.mandatory else EXIT_OK


def diff(before: str, after: str, *, stack: str, as_json: bool, out=None, err=None) -> int:
    from infra.diff import DiffError, diff_files

    out, err = out or sys.stdout, err or sys.stderr
    with _rare_collections():
        try:
            result = diff_files(before, after, stack=stack)
        except DiffError as e:
            print(f"the engine would refuse this step: {e}", file=err)
            return EXIT_VIOLATION
        except Exception as e:  # noqa: BLE001 - config errors arrive wrapped by the Pulumi runtime
            message = _config_problem(e)
            if message is None:
                traceback.print_exception(e, file=err)
                print(f"diff failed: the program raised {type(e).__name__}: {e}", file=err)
                return EXIT_ERROR
            print(message, file=err)
            return EXIT_INVALID
    if as_json:
        json.dump(result.as_json(), out, indent=2, default=str)
        out.write("\n")
    else:
        print(result.render(), file=out)
    return EXIT_VIOLATION if result.refused else EXIT_OK


def cloudflare_ips_command(*, write: bool, urlopen: Any = None, out=None, err=None) -> int:
    """0 up to date (or written), 1 stale, 3 could not check (the file was neither compared nor changed)."""
    import urllib.error

    out, err = out or sys.stdout, err or sys.stderr
    from infra.cloudflare_ips import API, DATA, refresh

    try:
        changed, report = refresh(write=write, urlopen=urlopen)
    except (urllib.error.URLError, OSError, ValueError) as e:  # URLError and RangesError are among these
        why = getattr(e, "reason", None) or e
        what = "answered with something other than Cloudflare's ranges" if isinstance(e, ValueError) else "cannot be reached"
        print(f"{API} {what} ({why}); {DATA.name} was not compared and is unchanged. Check the network or "
              "HTTPS_PROXY and run it again: the ranges in the file stay in use until then", file=err)
        return EXIT_UNCHECKED
    print(report, file=out)
    return EXIT_VIOLATION if changed and not write else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_plan = sub.add_parser("plan", help="run the program under mocks and show what it declares")
    p_plan.add_argument("--stack", required=True, help="stack name, e.g. phase-a (reads Pulumi.<stack>.yaml)")
    p_plan.add_argument("--json", action="store_true", help="machine-readable output")
    p_plan.add_argument("--config-file", type=Path, help="read this stack file instead of Pulumi.<stack>.yaml")
    p_diff = sub.add_parser("diff", help="what `pulumi up` from one stack file to another would create, update, replace "
                                         "and delete, and the monthly cost change (exit 1: a protected resource is lost)")
    p_diff.add_argument("--from", dest="before", required=True, metavar="A",
                        help="the stack file deployed now (a path, or a stack name: Pulumi.<name>.yaml)")
    p_diff.add_argument("--to", dest="after", required=True, metavar="B", help="the stack file of the next `pulumi up`")
    p_diff.add_argument("--stack", default="prod", help="the stack name both are planned under (URNs and names hold it; "
                                                        "default prod)")
    p_diff.add_argument("--json", action="store_true", help="machine-readable output")
    p_docs = sub.add_parser("docs", help="regenerate docs/config.md, docs/outputs.md and the README's phase table from the code")
    p_docs.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is stale")
    p_bundle = sub.add_parser("bundle-pack", help="copy the policy pack and the core package it imports into one folder")
    p_bundle.add_argument("out", type=Path, help="folder to write, e.g. build/policy-pack (then: pulumi policy publish it)")
    p_ips = sub.add_parser("cloudflare-ips", help="compare infra/cloudflare-ips.json with Cloudflare's published ranges "
                                                  "(exit 0 up to date, 1 stale, 3 could not check)")
    p_ips.add_argument("--write", action="store_true", help="rewrite the file with the current ranges")
    args = parser.parse_args(argv)
    if args.command == "cloudflare-ips":
        return cloudflare_ips_command(write=args.write)
    if args.command == "plan":
        return plan(args.stack, args.json, args.config_file)
    if args.command == "docs":
        from infra.docs import main as docs_main

        with _rare_collections():
            return docs_main(args.check)
    if args.command == "diff":
        return diff(args.before, args.after, stack=args.stack, as_json=args.json)
    if args.command == "bundle-pack":
        from infra.bundle import bundle_pack

        print(f"wrote {bundle_pack(args.out)}; publish it with: pulumi policy publish {args.out}")
        return EXIT_OK
    return EXIT_INVALID


if __name__ == "__main__":
    code = main()
    # On the way out the interpreter would run full collections over everything the SDK keeps alive
    # (a quarter of phase B's plan), to free memory the OS reclaims anyway; frozen objects are skipped.
    gc.freeze()
    sys.exit(code)
