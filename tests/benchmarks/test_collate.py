"""benchmarks/collate.py: fixture result.json files -> exactly the expected leaderboard tables (deltas only where
task, protocol key and method match a published row; toy and '+tiny' runs never match; pre-training runs are
counted, not tabled)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from PIL import Image

from benchmarks.collate import DEFAULT_REFERENCE, collate, load_reference, main
from transfer.results import identity, write_result

COMMIT = "0123456789abcdef0123456789abcdef01234567"

REFERENCE = {"schema": "a2mim-reference/1", "entries": [
    {"id": "p-box", "paper": "P", "method": "a2mim", "backbone": "resnet50", "task": "coco_det", "dataset": "coco2017",
     "metric": "bbox_mAP", "value": 39.8, "protocol": "C4 2x", "protocol_key": "coco_det/coco2017/resnet50/c4-2x",
     "source": "README | table 3"},
    {"id": "p-mask", "paper": "P", "method": "a2mim", "backbone": "resnet50", "task": "coco_det",
     "dataset": "coco2017", "metric": "segm_mAP", "value": 34.9, "protocol": "C4 2x",
     "protocol_key": "coco_det/coco2017/resnet50/c4-2x", "source": "README | table 3", "note": "test-dev?"},
    {"id": "p-top1", "paper": "P", "method": "simmim", "backbone": "vit_base", "task": "in1k_finetune",
     "dataset": "imagenet1k", "metric": "top1", "value": 83.8, "protocol": "FT", "protocol_key": "k",
     "source": "S"},
]}


def _run(root: Path, name: str, method: str, metrics: dict, seed=None, task="coco_det", dataset="toy_coco",
         backbone="resnet18", config=True, **extra) -> None:
    d = root / name
    d.mkdir(parents=True)
    if config:
        (d / "config.py").write_text("x = 1\n")
    write_result(d, task=task, framework=extra.pop("framework", "mmdet"), dataset=dataset, backbone=backbone,
                 method=method, metrics=metrics, config="config.py" if config else None, git_commit=COMMIT,
                 **({"seed": seed} if seed is not None else {}), **extra)


def _toy(root: Path, name: str, method: str, top1: float, seed: int, **extra) -> None:
    """A frozen-protocol toy run written with the run identity, seeds paired (pre-training seed = seed)."""
    ident = identity(task="in1k_linear", dataset="toy_imagenet", framework="a2mim-suite", recipe="toy_linear",
                     backbone=extra.pop("backbone", "resnet18"), method=method,
                     pretrain="scratch" if method == "random" else "pt120s", markers=extra.pop("markers", ()))
    d = root / name
    d.mkdir(parents=True)
    write_result(d, **ident, metrics={"top1": top1}, seed=seed, pretrain_seed=seed, num_classes=8,
                 git_commit=COMMIT, **extra)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _run(root, "a2mim_s0", "a2mim", {"bbox_mAP": 30.0, "segm_mAP": 25.0}, seed=0, protocol="toy")
    _run(root, "a2mim_s1", "a2mim", {"bbox_mAP": 32.0, "segm_mAP": 26.0}, seed=1, protocol="toy")
    _run(root, "random_s0", "random", {"bbox_mAP": 10.0, "segm_mAP": 8.0}, seed=0, protocol="toy")
    _run(root, "random_s1", "random", {"bbox_mAP": 14.0, "segm_mAP": 10.0}, seed=1, protocol="toy")
    _run(root, "simmim_s0", "simmim", {"bbox_mAP": 28.0, "segm_mAP": 24.0}, seed=0, config=False, protocol="toy")
    _run(root, "paper_r50", "a2mim", {"bbox_mAP": 40.1, "segm_mAP": 34.0}, dataset="coco2017", backbone="resnet50",
         protocol="c4-2x")
    # the same protocol shrunk by --tiny: its own table, no delta
    _run(root, "tiny_r50", "a2mim", {"bbox_mAP": 5.0, "segm_mAP": 4.0}, dataset="coco2017", backbone="resnet50",
         protocol="c4-2x+tiny")
    # toy frozen protocol, new run identity: 3 seeds each; supervised is the ceiling
    for s, (a, r, sup) in enumerate([(21.0, 15.0, 60.0), (22.0, 17.0, 61.0), (23.0, 19.0, 62.0)]):
        _toy(root, f"lin/a2mim/seed{s}", "a2mim", a, s)
        _toy(root, f"lin/random/seed{s}", "random", r, s)
        _toy(root, f"lin/supervised/seed{s}", "supervised", sup, s)
    _toy(root, "lin/a2mim/seed0_old", "a2mim", 99.0, 0, time="2000-01-01T00:00:00+00:00")   # an older run of seed 0
    _toy(root, "lin/simmim/seed0", "simmim", 18.0, 0)
    for s, (a, r, sup) in enumerate([(13.0, 12.0, 12.5), (12.0, 13.0, 13.0), (14.0, 11.0, 12.0)]):   # not learnt
        _toy(root, f"vit/a2mim/seed{s}", "a2mim", a, s, backbone="vit_tiny")
        _toy(root, f"vit/random/seed{s}", "random", r, s, backbone="vit_tiny")
        _toy(root, f"vit/supervised/seed{s}", "supervised", sup, s, backbone="vit_tiny")
    # a pre-training run's result.json (task 'pretrain', losses): counted, not tabled
    _run(root, "pretrain_r18", "a2mim", {"loss": 0.1, "steps": 300.0}, task="pretrain", dataset="/data/imagenet")
    (root / "bad_json").mkdir()
    (root / "bad_json" / "result.json").write_text("")
    (root / "no_schema").mkdir()
    (root / "no_schema" / "result.json").write_text(json.dumps({"task": "coco_det"}))
    (root / "bad_metric").mkdir()
    rec = json.loads((root / "a2mim_s0" / "result.json").read_text())
    (root / "bad_metric" / "result.json").write_text(json.dumps({**rec, "metrics": {"bbox_mAP": "high"}}))
    ref = tmp_path / "reference.yaml"
    ref.write_text(yaml.safe_dump(REFERENCE))
    return root, ref


def _table(tables, title):
    return next(t for t in tables if t.title == title)


def test_tables_rows_and_deltas(runs, tmp_path, caplog):
    from benchmarks.collate import find_results
    from benchmarks.leaderboard_rows import build_tables

    root, ref = runs
    with caplog.at_level(logging.WARNING, logger="benchmarks.collate"):
        res = collate(root, tmp_path / "out", ref)
    assert res["results"] == 27 and res["tables"] == 4
    assert res["not_tabled"] == [root / "pretrain_r18" / "result.json"]
    assert [p.parent.name for p, _ in res["skipped"]] == ["bad_json", "bad_metric", "no_schema"]
    for name in ("bad_json", "bad_metric", "no_schema"):  # each skip is warned about, naming the file
        assert any(str(root / name / "result.json") in r.getMessage() for r in caplog.records)
    found, _, _ = find_results(root)
    tables = build_tables(found, load_reference(ref), str)
    assert [t.title for t in tables] == [
        "coco_det · coco2017 · mmdet · c4-2x", "coco_det · coco2017 · mmdet · c4-2x+tiny",
        "coco_det · toy_coco · mmdet · toy", "in1k_linear · toy_imagenet · a2mim-suite · toy_linear"]
    paper = _table(tables, "coco_det · coco2017 · mmdet · c4-2x")
    ours, pub = paper.rows
    assert ours.delta("bbox_mAP") == pytest.approx(0.3) and ours.delta("segm_mAP") == pytest.approx(-0.9)
    assert pub.kind == "published" and pub.source == "README | table 3; README | table 3 (test-dev?)"
    tiny = _table(tables, "coco_det · coco2017 · mmdet · c4-2x+tiny")
    assert tiny.rows[0].published == {} and tiny.rows[1].kind == "published"     # beside it, never compared
    toy = _table(tables, "coco_det · toy_coco · mmdet · toy")
    assert [r.method for r in toy.rows] == ["a2mim", "simmim", "random"]        # no published rows on toy data
    a2 = toy.rows[0]
    assert (a2.cells["bbox_mAP"].mean, round(a2.cells["bbox_mAP"].std, 4)) == (31.0, 1.4142)
    assert a2.vs_random.diff == 19.0 and a2.vs_random.significant             # bbox: the headline metric
    assert toy.rows[1].vs_random.low is None                                   # simmim: one run, no interval
    lin = _table(tables, "in1k_linear · toy_imagenet · a2mim-suite · toy_linear")
    a2 = next(r for r in lin.rows if (r.backbone, r.method) == ("resnet18", "a2mim"))
    assert a2.n == 3 and a2.cells["top1"].mean == 22.0 and len(a2.dropped) == 1   # the older seed-0 run dropped
    assert a2.dropped[0].endswith("lin/a2mim/seed0_old") and lin.chance == 12.5
    assert lin.seeds_vary() == "pre-training and transfer"


def test_verdicts_state_who_beats_random_and_refuse_unlearnt_tasks(runs, tmp_path):
    root, ref = runs
    res = collate(root, tmp_path / "out", ref)
    lin = [v for v in res["verdicts"] if v.startswith("in1k_linear")]
    head = "in1k_linear · toy_imagenet · a2mim-suite · toy_linear [top1; seeds vary: pre-training and transfer] "
    # resnet18: a2mim 22 ± 1 vs random 17 ± 2: +5.00, Welch df 50/17 (tests/benchmarks/test_stats.py by hand)
    assert lin[0].startswith(head + "resnet18: a2mim +5.00 [+0.8")
    assert "(beats random); simmim +1.00 (n<2: no interval) (too few runs to tell); supervised +44.00 [" in lin[0]
    assert "NOT LEARNT" not in lin[0]
    assert lin[1].startswith(head + "vit_tiny: NOT LEARNT at this budget") and "no verdict" in lin[1]
    toy = [v for v in res["verdicts"] if v.startswith("coco_det · toy_coco")]
    # bbox 31 ± 1.414 vs 12 ± 2.828, n = 2 each: se = sqrt(1 + 4), df = 25 / 17, t_0.975(df) = 6.20 -> ± 13.84
    assert toy == ["coco_det · toy_coco · mmdet · toy [bbox_mAP; seeds vary: transfer only] resnet18: "
                   "a2mim +19.00 [+5.16, +32.84] ✓ (beats random); simmim +16.00 (n<2: no interval) "
                   "(too few runs to tell)"]
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert summary == res["verdicts"]
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "## Verdicts" in md and md.index("## Verdicts") < md.index("## coco_det")
    assert "chance top-1 = 12.5" in md and "1 duplicate run(s) of the same seeds not counted" in md


def test_csv_long_format(runs, tmp_path):
    import csv
    root, ref = runs
    collate(root, tmp_path / "out", ref)
    rows = list(csv.DictReader((tmp_path / "out" / "leaderboard.csv").open()))
    paper = [r for r in rows if r["protocol"] == "c4-2x" and r["kind"] == "ours" and r["metric"] == "bbox_mAP"]
    assert len(paper) == 1 and paper[0]["published"] == "39.8" and paper[0]["delta"] == "0.3"
    sup = [r for r in rows if r["method"] == "supervised" and r["backbone"] == "resnet18"][0]
    assert (sup["n"], sup["value"], sup["std"], sup["vs_random"]) == ("3", "61.0", "1.0", "44.0")
    assert float(sup["vs_random_low"]) > 0 and sup["pretrain"] == "pt120s"


def test_html_and_plots(runs, tmp_path):
    root, ref = runs
    res = collate(root, tmp_path / "out", ref)
    page = res["files"]["html"].read_text()
    assert page.startswith("<!doctype html>") and page.count("<table") == 5  # four tables + published numbers
    assert '<a href="../runs/a2mim_s0/config.py">config</a>' in page and "<code>0123456</code>" in page
    assert page.count('src="data:image/png;base64,') == 4  # one plot per table, embedded: the page stands alone
    assert '<table class="ref">' in page                    # the published table wraps instead of overflowing
    plots = sorted((tmp_path / "out" / "plots").glob("*.png"))
    assert len(plots) == 4
    for png in plots:
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 200


def test_output_is_deterministic(runs, tmp_path):
    root, ref = runs
    collate(root, tmp_path / "a", ref)
    names = ["leaderboard.md", "leaderboard.csv", "leaderboard.html", "summary.txt",
             *[p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a" / "plots").glob("*.png")]]
    first = {n: (tmp_path / "a" / n).read_bytes() for n in names}
    collate(root, tmp_path / "a", ref)
    assert {n: (tmp_path / "a" / n).read_bytes() for n in names} == first


def test_published_reference_file_holds_spec_numbers():
    entries = {e["id"]: e for e in load_reference(DEFAULT_REFERENCE)}
    # spec §6, typed in by hand: (id, value)
    spec = {"a2mim-vit_small-in1k": 82.1, "simmim-vit_small-in1k": 81.7, "a2mim-vit_base-in1k": 84.2,
            "simmim-vit_base-in1k": 83.8, "a2mim-vit_large-in1k": 86.1, "simmim-vit_large-in1k": 85.6,
            "a2mim-resnet50-in1k-a3-pt100": 78.8, "a2mim-resnet50-in1k-a3-pt300": 78.9,
            "a2mim-resnet50-in1k-a2": 80.4, "simmim-resnet50-in1k-a2": 79.9, "supervised-resnet50-in1k-a2": 79.8,
            "a2mim-resnet101-in1k-a2": 81.9, "simmim-resnet101-in1k-a2": 81.3, "a2mim-resnet152-in1k-a2": 82.5,
            "simmim-resnet152-in1k-a2": 81.9, "a2mim-resnet200-in1k-a2": 83.0, "simmim-resnet200-in1k-a2": 82.2,
            "a2mim-convnext_small-in1k": 83.7, "simmim-convnext_small-in1k": 83.2,
            "a2mim-convnext_base-in1k": 84.1, "simmim-convnext_base-in1k": 83.6,
            "a2mim-resnet50-coco-box": 39.8, "a2mim-resnet50-coco-mask": 34.9, "a2mim-vit_base-coco-box": 49.4,
            "a2mim-vit_base-coco-mask": 43.5, "a2mim-vit_base-ade": 49.0, "a2mim-resnet50-ade": 38.3,
            "mae-vit_base-in1k": 83.6, "mae-vit_base-coco-box": 50.3, "mae-vit_base-coco-mask": 44.9,
            "mae-vit_base-ade": 48.1, "spark-resnet50-in1k": 80.6, "mocov3-resnet50-in1k-a2": 80.1}
    assert {k: entries[k]["value"] for k in spec} == spec
    for e in entries.values():
        assert e["protocol_key"].split("/")[:2] == [e["task"], e["dataset"]] and e["protocol_key"].split("/")[3] == e["backbone"], e["id"]
        assert e["source"] and e["protocol"]
    assert "PapersWithCode" in entries["a2mim-resnet50-coco-box"]["source"]
    assert "A2MIM README.md" in entries["a2mim-vit_base-in1k"]["source"]


def test_bad_reference_names_file_and_entry(tmp_path):
    ref = tmp_path / "ref.yaml"
    ref.write_text(yaml.safe_dump({"entries": [{"id": "x", "method": "a2mim", "value": 1.0}]}))
    with pytest.raises(ValueError, match=r"ref\.yaml: entry 0 \(x\) lacks \['backbone'"):
        load_reference(ref)
    ref.write_text(yaml.safe_dump({"entries": [{**REFERENCE["entries"][0], "value": "n/a"}]}))
    with pytest.raises(ValueError, match=r"ref\.yaml: entry p-box: value must be a number"):
        load_reference(ref)


def test_cli(runs, tmp_path, capsys):
    root, ref = runs
    assert main([str(root), "--out", str(tmp_path / "cli"), "--reference", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "27 results in 4 tables, 3 skipped" in out and "NOT LEARNT" in out
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--no-reference"]) == 1  # nothing to show is a failure
    assert main([str(tmp_path / "missing")]) == 2


def test_analysis_curves_join_the_report(runs, tmp_path):
    """--analysis: an interactions --out folder's PNG is copied to plots/ and shown in the Markdown and HTML."""
    import base64

    ana = tmp_path / "mi_toy"
    ana.mkdir()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(ana / "interactions.png")
    root, ref = runs
    out = tmp_path / "lb"
    assert main([str(root), "--out", str(out), "--reference", str(ref), "--analysis", str(ana)]) == 0
    png = out / "plots" / "analysis_0_mi_toy.png"
    assert png.read_bytes() == (ana / "interactions.png").read_bytes()
    md = (out / "leaderboard.md").read_text()
    assert "## Multi-order interactions: mi_toy" in md and "](plots/analysis_0_mi_toy.png)" in md
    assert base64.b64encode(png.read_bytes()).decode() in (out / "leaderboard.html").read_text()
    with pytest.raises(ValueError, match="no interactions.png"):
        collate(root, tmp_path / "lb2", ref, analysis=[tmp_path])


def test_mmdet_and_detectron2_runs_of_one_recipe_are_two_protocols(tmp_path):
    """The run identity has the framework in it: an mmdet and a detectron2 run of the same backbone, method and
    recipe id land in two tables, each compared only with the published number of its own protocol."""
    from benchmarks.leaderboard_rows import build_tables
    from benchmarks.collate import find_results

    root = tmp_path / "runs"
    for fw, box in (("mmdet", 39.0), ("detectron2", 38.0)):
        ident = identity(task="coco_det", dataset="coco2017", framework=fw, recipe="maskrcnn-c4-ms2x",
                         backbone="resnet50", method="a2mim", pretrain="pt300")
        (root / fw).mkdir(parents=True)
        write_result(root / fw, **ident, metrics={"bbox_mAP": box}, seed=0, git_commit=COMMIT)
    ref = [{"id": f"p-{fw}", "method": "a2mim", "backbone": "resnet50", "task": "coco_det", "dataset": "coco2017",
            "metric": "bbox_mAP", "value": v, "protocol_key": f"coco_det/coco2017/{fw}/resnet50/maskrcnn-c4-ms2x@pt300",
            "source": "S"} for fw, v in (("mmdet", 39.8), ("detectron2", 40.5))]
    found, _, _ = find_results(root)
    tables = build_tables(found, ref, str)
    assert [t.framework for t in tables] == ["detectron2", "mmdet"]
    for t, (box, pub) in zip(tables, ((38.0, 40.5), (39.0, 39.8))):
        ours = [r for r in t.rows if r.kind == "ours"]
        assert len(ours) == 1 and ours[0].cells["bbox_mAP"].n == 1          # not averaged as two "seeds"
        assert [r.source for r in t.rows if r.kind == "published"] == ["S"]  # only its own framework's row
        assert ours[0].published == {"bbox_mAP": pub} and ours[0].delta("bbox_mAP") == pytest.approx(box - pub)
