"""Run a benchmark suite: pre-training variants x transfer tasks x seeds, then the leaderboard.

    python benchmarks/run_all.py                      # the built-in toy suite on CPU (generates its own data)
    python benchmarks/run_all.py --dry-run            # print the plan
    python benchmarks/run_all.py --suite paper --data-root /datasets --slurm --partition gpu
Each step runs as its own subprocess (or SLURM job), up to --jobs at a time once its dependencies are done (locally
each with CPUs // jobs intra-op threads: small CPU models run best one thread per process). Finished steps are
skipped, partial ones resume from their folders, a failed step is reported and everything not depending on it goes
on.
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

if __package__ in (None, ""):                       # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import step_inputs  # noqa: E402
from benchmarks.executors import LocalExecutor, cpu_count, make_slurm_executor  # noqa: E402
from benchmarks.suite import Step, SuiteError, load_suite, plan, resolve_suite_path  # noqa: E402
from pretrain.fileio import atomic_write_json  # noqa: E402
from pretrain.runlock import describe_holder  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="toy", help="suite name in benchmarks/suites/ or a YAML path (default: toy)")
    ap.add_argument("--work-dir", "--out", dest="out", type=Path,
                    help="suite folder (default: the suite's `out`); --out is the same flag")
    ap.add_argument("--data-root", type=Path, help="dataset root (paper suite: holds imagenet/, coco/, ade/)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only matching steps (+ their deps)")
    ap.add_argument("--force-new", action="store_true",
                    help="re-run done steps whose inputs changed (command or upstream weights); their old folders "
                         "are moved aside, nothing is deleted")
    ap.add_argument("--rerun-failed", action="store_true", help="(default) failed steps are retried; kept for clarity")
    ap.add_argument("--slurm", action="store_true", help="run each step as a SLURM job through slurm/ (submitit)")
    ap.add_argument("--timeout-s", type=int, default=None, help="per-step timeout for local runs")
    ap.add_argument("--jobs", type=int, default=None,
                    help="steps run at the same time (default: local = the CPUs this process may use, at most 4; "
                         "--slurm = 8); independent steps only, dependencies wait")
    ap.add_argument("--threads", type=int, default=None,
                    help="local: intra-op threads per step (default: CPUs // jobs, at least 1)")
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


class StopRequested(Exception):
    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _raise_stop(signum, frame):
    raise StopRequested(signum)


def execute(steps: list[Step], executor, status_path: Path, jobs: int = 1, force_new: bool = False
            ) -> dict[str, str]:
    """Run `steps` (in plan order, dependencies first) with up to `jobs` at a time; a step starts once all of its
    dependencies in `steps` finished well, is skipped when done already (and made from the same inputs:
    benchmarks/step_inputs.py), and is blocked when one failed. A step whose folder another live process holds
    (an orphan of a killed run_all) is refused, never run beside it.
    Returns {step id: "ok (N s)" | "skipped (done)" | "failed: ..." | "blocked by ID"}; status_path is rewritten
    after every finished step. On StopRequested (run_all's SIGTERM / SIGINT / SIGHUP) the running steps are
    stopped through executor.stop_all (they save and exit) before it propagates."""
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        return _execute(steps, executor, status_path, jobs, force_new, pool)
    except StopRequested:       # caught inside the pool's lifetime: its shutdown would wait for the steps
        if hasattr(executor, "stop_all"):
            print("stopping the running steps (they save a checkpoint first) ...", flush=True)
            executor.stop_all()
        raise
    finally:
        pool.shutdown(wait=True)


def _execute(steps, executor, status_path, jobs, force_new, pool) -> dict[str, str]:
    status: dict[str, str] = {}
    t_suite = time.time()
    n, ids = len(steps), {s.id for s in steps}
    index = {s.id: i for i, s in enumerate(steps, 1)}
    pending, running = list(steps), {}

    def head(s: Step) -> str:
        return f"[{index[s.id]:3d}/{n}] {s.id}"

    while pending or running:
        for s in list(pending):                  # plan order: a step's dependencies are decided before it
            changed = step_inputs.changes(s) if s.is_done else []
            if s.is_done and not changed:
                status[s.id] = "skipped (done)"
                print(f"{head(s)}: done already, skipped", flush=True)
                pending.remove(s)
                continue
            if changed and not force_new:
                status[s.id] = (f"failed: done, but made from other inputs ({'; '.join(changed)}); "
                                f"run_all --force-new re-runs it (the old folder is moved aside)")
                print(f"{head(s)}: {status[s.id]}", flush=True)
                pending.remove(s)
                continue
            bad = [d for d in s.deps if status.get(d, "").startswith(("failed", "blocked"))]
            if bad:
                status[s.id] = f"blocked by {bad[0]}"
                print(f"{head(s)}: blocked (dependency {bad[0]} failed)", flush=True)
                pending.remove(s)
                continue
            ready = all(d in status or d not in ids for d in s.deps)
            if ready and len(running) < max(1, jobs):
                pending.remove(s)
                holder = describe_holder(s.run_dir)
                if holder:
                    status[s.id] = (f"failed: its folder {s.run_dir} is in use by {holder} (an orphan of an "
                                    f"earlier run_all?); stop it or wait for it, then run again")
                    print(f"{head(s)}: {status[s.id]}", flush=True)
                    continue
                step_inputs.record(s)
                print(f"{head(s)}: running{' (--force-new)' if changed else ''} ...", flush=True)
                run = step_inputs.with_force_new(s) if changed else s
                running[pool.submit(executor.run, run)] = (s, time.time())
        if not running:
            break                                # nothing can start: (cannot happen with plan-ordered deps)
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            s, t0 = running.pop(fut)
            try:
                ok, detail = fut.result()
            except Exception as e:               # an executor error is this step's failure, not the suite's
                ok, detail = False, f"{type(e).__name__}: {e}"
            dt = time.time() - t0
            if ok and not s.is_done:
                ok, detail = False, f"exited 0 but did not write {s.done}"
            cpu = getattr(executor, "cpu_s", {}).get(s.id)
            took = f"{dt:.0f} s" + (f", {cpu:.0f} cpu-s" if cpu is not None else "")
            status[s.id] = f"ok ({took})" if ok else f"failed: {detail}"
            print(f"{head(s)}: {'ok' if ok else 'FAILED'} in {took} (elapsed {time.time() - t_suite:.0f} s)"
                  + ("" if ok else f"\n{detail}"), flush=True)
            atomic_write_json(status_path, status)
    for s in pending:                                # only if a dependency never resolved
        status[s.id] = "blocked: dependencies did not finish"
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
    if args.slurm:
        jobs = args.jobs or 8
        executor = make_slurm_executor(args, out)
        how = f"{jobs} SLURM jobs at a time"
    else:
        jobs = args.jobs or min(cpu_count(), 4)
        threads = args.threads or max(1, cpu_count() // jobs)
        executor = LocalExecutor(timeout_s=args.timeout_s, threads=threads)
        how = f"{jobs} at a time x {threads} threads"
    t0 = time.time()
    print(f"suite {suite['name']}: {len(steps)} steps -> {out} ({how})", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):   # stop the steps with run_all, never orphan them
        signal.signal(sig, _raise_stop)
    try:
        status = execute(steps, executor, out / "status.json", jobs=jobs, force_new=args.force_new)
    except StopRequested as e:
        print(f"\nrun_all stopped by {e}: the running steps saved and stopped; run the same command again to "
              f"continue (finished steps are skipped, stopped ones resume)", file=sys.stderr)
        return 128 + e.signum
    collate.done.unlink(missing_ok=True)                      # the leaderboard is always rewritten
    if (out / "transfer").is_dir():
        ok, detail = LocalExecutor().run(collate)
        status["collate"] = "ok" if ok else f"failed: {detail}"
    else:                                                     # a suite of pre-trainings only
        ok, status["collate"] = False, "skipped (no transfer results)"
    atomic_write_json(out / "status.json", status)
    failed = {k: v for k, v in status.items() if v.startswith(("failed", "blocked"))}
    print(f"\nsuite {suite['name']} finished in {time.time() - t0:.0f} s: "
          f"{len(status) - len(failed)} ok/skipped, {len(failed)} failed or blocked")
    for k, v in failed.items():
        print(f"  {k}: {v.splitlines()[0]}")
    if ok:
        summary = board / "summary.txt"
        print("\nverdicts (Δ vs random init, 95 % interval; ✓ = excludes 0):")
        print("".join(f"  {line}\n" for line in summary.read_text().splitlines()) if summary.is_file() else "  (none)")
        print(f"leaderboard: {board / 'leaderboard.md'} (also .html, .csv, plots/)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
