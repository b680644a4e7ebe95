"""run_all: plan expansion, strict suites, skip-when-done, failure isolation (real subprocesses, stdlib modules)."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.executors import LocalExecutor
from benchmarks.run_all import execute, main, select
from benchmarks.suite import Step, SuiteError, load_suite, plan, resolve_suite_path


def test_toy_suite_plan_has_matrix_and_dependencies(tmp_path):
    steps = plan(load_suite(resolve_suite_path("toy")), tmp_path)
    ids = [s.id for s in steps]
    assert ids[0] == "data/toy"
    for m in ("a2mim_r18", "simmim_r18", "random_r18"):
        assert f"export/{m}" in ids and f"toy_coco_instance/{m}/seed0" in ids
    by_id = {s.id: s for s in steps}
    assert by_id["toy_coco_instance/a2mim_r18/seed0"].deps == ["export/a2mim_r18"]
    assert by_id["export/a2mim_r18"].deps == ["pretrain/a2mim_r18"]
    # every dependency comes before its dependant
    for i, s in enumerate(steps):
        assert all(ids.index(d) < i for d in s.deps)
    sel = [s.id for s in select(steps, "toy_coco_instance/random_r18")]
    assert sel == ["data/toy", "export/random_r18", "toy_coco_instance/random_r18/seed0"]


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
    assert "python -m pretrain.train --config pretrain/configs/tiny_r18.yaml" in out
    assert "collate" in out
