"""`python -m bench`: run the scenarios, print one table, write the JSON file."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import machine, peers
from bench.report import Figure, notes, side_by_side, table, write_json
from bench.scenarios import DEFAULT, SCENARIOS
from bench.settings import QUICK, BenchSettings

REPO = Path(__file__).resolve().parent.parent


def _slots(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    """The suite's options; sizes left unset take the issue's defaults (or --quick's)."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--json-out", type=Path, help="also write every figure and raw timing here")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of about a minute")
    ap.add_argument("--only", help=f"comma-separated scenarios to run: {','.join(SCENARIOS)}")
    ap.add_argument("-n", "--jobs", type=int, dest="e2e_jobs", help="N for end to end (default 5,000)")
    ap.add_argument("-c", "--slots", type=_slots, help="C values for end to end, e.g. 2,4 (default)")
    ap.add_argument("--rounds", type=int, help="end-to-end repetitions, medians reported (default 1)")
    ap.add_argument("--batch-jobs", type=int, help="jobs in the batch enqueue (default 100,000)")
    ap.add_argument("--single-runs", type=int, help="interleaved runs of each single command (default 30)")
    ap.add_argument("--dispatch-jobs", type=int, help="jobs for dispatch latency (default 500)")
    ap.add_argument("--scale-jobs", type=int, help="jobs in the big store (default 1,000,000)")
    ap.add_argument("--scale-small-jobs", type=int, help="jobs in the small store (default 1,000)")
    ap.add_argument("--claim-jobs", type=int, help="jobs run to time the claim rate (default 500)")
    ap.add_argument("--claim-cap-s", type=float, help="give a slow claim run at most this long (default 60)")
    ap.add_argument("--retry-jobs", type=int, help="jobs in retry churn (default 1,000)")
    ap.add_argument("--soak-jobs", type=int, help="jobs through the retention soak, `--only soak` (default 200,000)")
    ap.add_argument("--soak-pg", action="store_true", default=None,
                    help="run the soak on a scratch PostgreSQL database (QUEUECTL_BENCH_PG_URL)")
    ap.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                    help="the daemons' log level (default INFO, queuectld's own default)")
    ap.add_argument("--profile", type=Path, dest="profile_dir", metavar="DIR",
                    help="record each daemon with py-spy (raw folded stacks) into DIR")
    ap.add_argument("--peers", action="store_true", default=None,
                    help="end to end also with huey and procrastinate, and queuectl sending one job.enqueue per job "
                         "(needs the bench extra)")
    ap.add_argument("--pg-stats", action="store_true", default=None,
                    help="print the PostgreSQL runs' top statements by total time (pg_stat_statements, else "
                         "timed in the daemon, with EXPLAIN ANALYZE of the hottest)")
    ap.add_argument("--roundtrip-calls", type=int, help="job.enqueue round trips timed per store (default 1,000)")
    return ap


def settings_from(args: argparse.Namespace) -> BenchSettings:
    """The preset (default or --quick) with the options given on top."""
    base = QUICK if args.quick else BenchSettings()
    names = {f.name for f in dataclasses.fields(BenchSettings)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return dataclasses.replace(base, **given)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios in order; a scenario that fails is reported and the rest still run."""
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    chosen = [s.strip() for s in args.only.split(",")] if args.only else list(DEFAULT)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    info = machine.describe(REPO)
    print(f"machine: {machine.summary_line(info)}", file=sys.stderr)
    missing = peers.missing() if settings.peers else []
    if missing:
        print(peers.missing_message(missing), file=sys.stderr)

    figures: list[Figure] = []
    details: dict[str, Any] = {"seconds": {}}
    failed: dict[str, str] = {}
    for name in chosen:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            figures += SCENARIOS[name](settings, details)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            failed[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        details["seconds"][name] = round(time.monotonic() - t0, 2)
        print(f"[bench] {name} done in {details['seconds'][name]:.1f} s", file=sys.stderr, flush=True)

    if machine.source_fingerprint(REPO) != info["source"]:
        info["source_changed_during_run"] = True
        print("\nWARNING: the product's sources changed while the benchmark ran; figures mix versions.")
    print(f"\nqueuectl benchmark ({'quick' if args.quick else 'full'} sizes)")
    print(f"machine: {machine.summary_line(info)}\n")
    print(table(figures))
    if notes(figures):
        print("\nNotes:\n" + notes(figures))
    if "side_by_side" in details:
        print("\nSide by side (same run; ratios to xargs -P C):\n" + side_by_side(details["side_by_side"]))
    if missing:
        print("\n" + peers.missing_message(missing))
    if details.get("pg_stats"):
        from bench.pgstats import format_stats

        for label, result in details["pg_stats"].items():
            print("\n" + format_stats(label, result))
    for name, why in failed.items():
        print(f"\nscenario {name} FAILED: {why}")
    if args.json_out:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()}
        config.update(quick=args.quick, scenarios=chosen, failed=failed)
        write_json(args.json_out, info, config, figures, details)
        print(f"\nwrote {args.json_out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
