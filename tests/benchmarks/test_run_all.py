"""run_all: plan expansion, strict suites, skip-when-done, failure isolation (real subprocesses, stdlib modules)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.executors import LocalExecutor
from benchmarks.run_all import execute, main, select
from benchmarks.suite import Step, SuiteError, load_suite, plan, resolve_suite_path


def test_toy_suite_plan_has_matrix_seeds_and_dependencies(tmp_path):
    steps = plan(load_suite(resolve_suite_path("toy")), tmp_path)
    ids = [s.id for s in steps]
    by_id = {s.id: s for s in steps}
    assert ids[0] == "data/toy"
    tasks = ("toy_linear", "toy_knn", "toy_linseg")
    for b in ("r18", "vit"):
        for seed in (0, 1, 2):              # paired seeds: one pre-training per seed, its transfers use that seed
            for m in ("a2mim", "simmim"):
                assert f"run.seed={seed}" in by_id[f"pretrain/{m}_{b}/seed{seed}"].argv
            assert f"export/random_{b}/seed{seed}" in ids
            sup = [f"export/supervised_{b}_init/seed{seed}", f"pretrain/supervised_{b}/seed{seed}",
                   f"export/supervised_{b}/seed{seed}"]
            assert all(i in ids for i in sup)
            assert by_id[sup[1]].deps == [sup[0]] and by_id[sup[2]].deps == [sup[1]]
            assert by_id[sup[1]].argv[0] == "transfer.classification.train"
            for m in ("a2mim", "simmim", "supervised", "random"):
                for task in tasks:
                    assert f"{task}/{m}_{b}/seed{seed}" in ids
    assert sum(s.kind == "transfer" for s in steps) == 2 * 4 * 3 * len(tasks)
    assert sum(s.kind == "pretrain" for s in steps) == 2 * 3 * 3
    lin = by_id["toy_linear/a2mim_r18/seed1"]
    assert lin.deps == ["pretrain/a2mim_r18/seed1"]       # the run's own export (run.export_at_end)
    assert lin.argv[lin.argv.index("--weights") + 1] == str(tmp_path / "pretrain" / "a2mim_r18" / "seed1" /
                                                            "backbone.safetensors")
    assert lin.argv[-1] == "run.seed=1" and lin.argv[lin.argv.index("--cache-dir") + 1] == str(tmp_path / "features")
    rnd = by_id["toy_linseg/random_vit/seed2"]
    assert rnd.deps == ["export/random_vit/seed2"] and rnd.argv[:2] == ["transfer.mmseg.train",
                                                                      "transfer/mmseg/configs/toy_linear_seg.py"]
    assert by_id["export/random_vit/seed2"].argv[by_id["export/random_vit/seed2"].argv.index("--seed") + 1] == "2"
    # every dependency comes before its dependant, and every pre-training before the first transfer
    for i, s in enumerate(steps):
        assert all(ids.index(d) < i for d in s.deps)
    first_transfer = min(i for i, s in enumerate(steps) if s.kind == "transfer")
    assert all(s.kind != "pretrain" for s in steps[first_transfer:])
    sel = [s.id for s in select(steps, "toy_knn/random_r18/seed0")]
    assert sel == ["data/toy", "export/random_r18/seed0", "toy_knn/random_r18/seed0"]


def test_transfer_seed_mode_shares_one_pretraining(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nseeds: [0, 1]\npretrain:\n  r: {random: resnet18, kind: cnn}\n"
                 "tasks:\n  t: {entry: m, kinds: {cnn: ['{weights}', '{seed}']}}\n")
    steps = plan(load_suite(p), tmp_path)
    assert [s.id for s in steps] == ["export/r", "t/r/seed0", "t/r/seed1"]
    assert steps[1].argv == ["m", str(tmp_path / "weights" / "r.safetensors"), "0"]
    p.write_text(p.read_text().replace("name: x", "name: x\nseed_mode: pairs"))
    with pytest.raises(SuiteError, match="seed_mode must be one of"):
        load_suite(p)


def test_suite_unknown_key_names_the_nearest(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\npretrain: {}\ntasks: {}\nseedz: [0]\n")
    with pytest.raises(SuiteError, match="unknown key 'seedz'.*did you mean 'seeds'"):
        load_suite(p)


def _zip_step(tmp_path: Path, sid: str, deps=(), ok=True) -> Step:
    src = tmp_path / "payload.txt"
    src.write_text("x")
    out = tmp_path / f"{sid.replace('/', '_')}.zip"
    argv = ["zipfile", "-c", str(out), str(src)] if ok else ["zipfile", "-t", str(tmp_path / "missing.zip")]
    return Step(sid, "transfer", argv, tmp_path / sid.replace("/", "_"), out, list(deps))


def test_failure_isolated_and_second_run_does_nothing(tmp_path, capsys):
    steps = [_zip_step(tmp_path, "a"), _zip_step(tmp_path, "bad", ok=False),
             _zip_step(tmp_path, "after_bad", deps=["bad"]), _zip_step(tmp_path, "c", deps=["a"])]
    status = execute(steps, LocalExecutor(), tmp_path / "status.json")
    assert status["a"].startswith("ok") and status["c"].startswith("ok")
    assert status["bad"].startswith("failed: exit code")
    assert status["after_bad"] == "blocked by bad"
    again = execute(steps[:1] + steps[3:], LocalExecutor(), tmp_path / "status.json")
    assert again == {"a": "skipped (done)", "c": "skipped (done)"}


def test_dry_run_prints_the_plan(capsys, tmp_path):
    assert main(["--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "python -m pretrain.train --config pretrain/configs/toy_r18.yaml" in out
    assert "collate" in out


def _handshake_step(tmp_path: Path, me: str, other: str, deps=()) -> Step:
    """A step that announces itself (me.flag), waits up to 60 s for `other`'s flag, then writes me.done and the
    OMP_NUM_THREADS it saw: it can only finish when both steps run at the same time."""
    code = [f"import os, pathlib, time; d = pathlib.Path({str(tmp_path)!r})",
            f"(d / '{me}.flag').touch(); t = time.time()",
            f"while not (d / '{other}.flag').exists():",
            "  assert time.time() - t < 60, 'the other step never started'; time.sleep(0.05)",
            f"(d / '{me}.done').write_text(os.environ.get('OMP_NUM_THREADS', 'unset'))"]
    return Step(me, "transfer", ["timeit", "-n", "1", "-r", "1", *code], tmp_path / me, tmp_path / f"{me}.done",
                list(deps))


def test_jobs_run_independent_steps_together_with_their_thread_budget(tmp_path):
    steps = [_handshake_step(tmp_path, "a", "b"), _handshake_step(tmp_path, "b", "a"),
             _zip_step(tmp_path, "after", deps=["a", "b"])]
    status = execute(steps, LocalExecutor(threads=1), tmp_path / "status.json", jobs=2)
    assert [status[k].split(" ")[0] for k in ("a", "b", "after")] == ["ok", "ok", "ok"]
    assert (tmp_path / "a.done").read_text() == (tmp_path / "b.done").read_text() == "1"


def test_timeout_kills_the_step_and_cpu_seconds_are_per_step(tmp_path):
    slow = Step("slow", "transfer", ["timeit", "-n", "1", "-r", "1", "import time; time.sleep(30)"],
                tmp_path / "slow", tmp_path / "never", meta={"timeout_s": 1})
    ex = LocalExecutor()
    t0 = time.time()
    ok, detail = ex.run(slow)
    assert not ok and detail.startswith("timed out after 1 s") and time.time() - t0 < 20
    busy = _zip_step(tmp_path, "busy")
    assert ex.run(busy) == (True, "") and 0.0 < ex.cpu_s["busy"] < 30.0   # a python start-up: well under 30 s
