"""Run a benchmark suite: pre-training variants x transfer tasks x seeds, then the leaderboard.

    python benchmarks/run_all.py                      # the built-in toy suite on CPU (generates its own data)
    python benchmarks/run_all.py --dry-run            # print the plan
    python benchmarks/run_all.py --suite paper --data-root /datasets --slurm --partition gpu
Each step runs as its own subprocess (or SLURM job). Finished steps are skipped, partial ones resume from their
folders, a failed step is reported and everything not depending on it goes on.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):                       # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.executors import LocalExecutor, make_slurm_executor  # noqa: E402
from benchmarks.suite import Step, SuiteError, load_suite, plan, resolve_suite_path  # noqa: E402
from pretrain.fileio import atomic_write_json  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="toy", help="suite name in benchmarks/suites/ or a YAML path (default: toy)")
    ap.add_argument("--out", type=Path, help="suite folder (default: the suite's `out`)")
    ap.add_argument("--data-root", type=Path, help="dataset root (paper suite: holds imagenet/, coco/, ade/)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only matching steps (+ their deps)")
    ap.add_argument("--rerun-failed", action="store_true", help="(default) failed steps are retried; kept for clarity")
    ap.add_argument("--slurm", action="store_true", help="run each step as a SLURM job through slurm/ (submitit)")
    ap.add_argument("--timeout-s", type=int, default=None, help="per-step timeout for local runs")
    from slurm.options import add_cluster_args   # the one shared set of cluster options
    add_cluster_args(ap)
    return ap.parse_args(argv)


def select(steps: list[Step], only: str) -> list[Step]:
    if not only:
        return steps
    keys = [s for s in only.split(",") if s]
    by_id = {s.id: s for s in steps}
    keep: set[str] = set()

    def add(sid: str):
        if sid not in keep:
            keep.add(sid)
            for d in by_id[sid].deps:
                add(d)
    for s in steps:
        if any(k in s.id for k in keys):
            add(s.id)
    return [s for s in steps if s.id in keep]


def print_plan(steps: list[Step]) -> None:
    for i, s in enumerate(steps, 1):
        state = "done" if s.is_done else "todo"
        print(f"[{i:3d}/{len(steps)}] {state:4s} {s.id}")
        print(f"          python -m {' '.join(shlex.quote(a) for a in s.argv)}")


def execute(steps: list[Step], executor, status_path: Path) -> dict[str, str]:
    status: dict[str, str] = {}
    t_suite = time.time()
    n = len(steps)
    for i, s in enumerate(steps, 1):
        head = f"[{i:3d}/{n}] {s.id}"
        if s.is_done:
            status[s.id] = "skipped (done)"
            print(f"{head}: done already, skipped", flush=True)
            continue
        bad = [d for d in s.deps if status.get(d, "").startswith(("failed", "blocked"))]
        if bad:
            status[s.id] = f"blocked by {bad[0]}"
            print(f"{head}: blocked (dependency {bad[0]} failed)", flush=True)
            continue
        print(f"{head}: running ...", flush=True)
        t0 = time.time()
        ok, detail = executor.run(s)
        dt = time.time() - t0
        if ok and not s.is_done:
            ok, detail = False, f"exited 0 but did not write {s.done}"
        status[s.id] = f"ok ({dt:.0f} s)" if ok else f"failed: {detail}"
        print(f"{head}: {'ok' if ok else 'FAILED'} in {dt:.0f} s (elapsed {time.time() - t_suite:.0f} s)"
              + ("" if ok else f"\n{detail}"), flush=True)
        atomic_write_json(status_path, status)
    return status


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        suite_path = resolve_suite_path(args.suite)
        suite = load_suite(suite_path)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = (args.out or Path(suite.get("out", f"runs/{suite['name']}"))).resolve()
    if suite.get("data", {}).get("requires_root") and args.data_root is None:
        print(f"error: suite '{suite['name']}' needs --data-root (a folder with imagenet/, coco/, ade/)", file=sys.stderr)
        return 2
    steps = select(plan(suite, out, args.data_root.resolve() if args.data_root else None), args.only)
    board = out / "leaderboard"
    collate = Step("collate", "collate", ["benchmarks.collate", str(out / "transfer"), "--out", str(board)],
                   out / "logs", board / "leaderboard.md")
    if args.dry_run:
        print(f"suite {suite['name']} ({suite_path}) -> {out}")
        print_plan(steps + [collate])
        return 0
    executor = make_slurm_executor(args, out) if args.slurm else LocalExecutor(timeout_s=args.timeout_s)
    t0 = time.time()
    print(f"suite {suite['name']}: {len(steps)} steps -> {out}", flush=True)
    status = execute(steps, executor, out / "status.json")
    collate.done.unlink(missing_ok=True)                      # the leaderboard is always rewritten
    ok, detail = LocalExecutor().run(collate)
    status["collate"] = "ok" if ok else f"failed: {detail}"
    atomic_write_json(out / "status.json", status)
    failed = {k: v for k, v in status.items() if v.startswith(("failed", "blocked"))}
    print(f"\nsuite {suite['name']} finished in {time.time() - t0:.0f} s: "
          f"{len(status) - len(failed)} ok/skipped, {len(failed)} failed or blocked")
    for k, v in failed.items():
        print(f"  {k}: {v.splitlines()[0]}")
    if ok:
        print(f"leaderboard: {board / 'leaderboard.md'}")
        print((board / "leaderboard.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
