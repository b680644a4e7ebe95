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
from transfer.results import write_result

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
    write_result(d, task=task, framework="mmdet", dataset=dataset, backbone=backbone, method=method,
                 metrics=metrics, config="config.py" if config else None, git_commit=COMMIT,
                 **({"seed": seed} if seed is not None else {}), **extra)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _run(root, "a2mim_s0", "a2mim", {"bbox_mAP": 30.0, "segm_mAP": 25.0}, seed=0, protocol="toy")
    _run(root, "a2mim_s1", "a2mim", {"bbox_mAP": 32.0, "segm_mAP": 26.0}, seed=1, protocol="toy")
    _run(root, "random_s0", "random", {"bbox_mAP": 10.0, "segm_mAP": 8.0}, seed=0, protocol="toy")
    _run(root, "random_s1", "random", {"bbox_mAP": 14.0, "segm_mAP": 10.0}, seed=1, protocol="toy")
    _run(root, "simmim_s0", "simmim", {"bbox_mAP": 28.0, "segm_mAP": 24.0}, seed=0, config=False, protocol="toy")
    _run(root, "seg_a2mim", "a2mim", {"aAcc": 80.0, "mIoU": 40.0}, seed=0, task="ade20k_seg", dataset="toy_ade",
         backbone="vit_tiny")
    _run(root, "paper_r50", "a2mim", {"bbox_mAP": 40.1, "segm_mAP": 34.0}, dataset="coco2017", backbone="resnet50",
         protocol="c4-2x")
    # the same protocol shrunk by --tiny: its own row, no delta
    _run(root, "tiny_r50", "a2mim", {"bbox_mAP": 5.0, "segm_mAP": 4.0}, dataset="coco2017", backbone="resnet50",
         protocol="c4-2x+tiny")
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


SRC = "README \\| table 3"
CFG = "[config](../runs/{0}/config.py), `0123456`"
TOY = "coco_det/toy_coco/resnet18/toy"
EXPECTED_MD = f"""# Leaderboard

8 results under `../runs`, 3 skipped, 1 pre-training run not tabled. Cells: mean ± sample std over n runs (seeds), metrics in percent; (Δ x) = ours − published, shown only where the protocol key and the method match.

## coco_det

| dataset | backbone | method | protocol | n | bbox_mAP | segm_mAP | runs / source |
|---|---|---|---|---:|---:|---:|---|
| coco2017 | resnet50 | a2mim | coco_det/coco2017/resnet50/c4-2x | 1 | 40.10 (Δ +0.30) | 34.00 (Δ -0.90) | [paper_r50](../runs/paper_r50) ({CFG.format("paper_r50")}) |
| coco2017 | resnet50 | a2mim | coco_det/coco2017/resnet50/c4-2x+tiny | 1 | 5.00 | 4.00 | [tiny_r50](../runs/tiny_r50) ({CFG.format("tiny_r50")}) |
| toy_coco | resnet18 | a2mim | {TOY} | 2 | 31.00 ± 1.41 | 25.50 ± 0.71 | [seed 0](../runs/a2mim_s0) ({CFG.format("a2mim_s0")}); [seed 1](../runs/a2mim_s1) ({CFG.format("a2mim_s1")}) |
| toy_coco | resnet18 | simmim | {TOY} | 1 | 28.00 | 24.00 | [seed 0](../runs/simmim_s0) (`0123456`) |
| toy_coco | resnet18 | random | {TOY} | 2 | 12.00 ± 2.83 | 9.00 ± 1.41 | [seed 0](../runs/random_s0) ({CFG.format("random_s0")}); [seed 1](../runs/random_s1) ({CFG.format("random_s1")}) |
| coco2017 | resnet50 | a2mim (published) | coco_det/coco2017/resnet50/c4-2x | – | 39.8 | 34.9 | {SRC}; {SRC} (test-dev?) |

![coco_det](plots/coco_det.png)

## ade20k_seg

| dataset | backbone | method | n | mIoU | aAcc | runs / source |
|---|---|---|---:|---:|---:|---|
| toy_ade | vit_tiny | a2mim | 1 | 40.00 | 80.00 | [seed 0](../runs/seg_a2mim) ({CFG.format("seg_a2mim")}) |

![ade20k_seg](plots/ade20k_seg.png)

## Published numbers

| id | paper | method | backbone | task | dataset | metric | value | protocol | protocol_key | source |
|---|---|---|---|---|---|---|---|---|---|---|
| p-box | P | a2mim | resnet50 | coco_det | coco2017 | bbox_mAP | 39.8 | C4 2x | coco_det/coco2017/resnet50/c4-2x | {SRC} |
| p-mask | P | a2mim | resnet50 | coco_det | coco2017 | segm_mAP | 34.9 | C4 2x | coco_det/coco2017/resnet50/c4-2x | {SRC} |
| p-top1 | P | simmim | vit_base | in1k_finetune | imagenet1k | top1 | 83.8 | FT | k | S |

## Skipped result.json (3)

- `../runs/bad_json/result.json`: not valid JSON (Expecting value: line 1 column 1 (char 0))
- `../runs/bad_metric/result.json`: metrics must be finite numbers, got {{'bbox_mAP': 'high'}}
- `../runs/no_schema/result.json`: schema None, expected 'a2mim-result/1'
"""

C = "0123456"
EXPECTED_CSV = f"""kind,task,dataset,backbone,method,protocol_key,metric,n,value,std,published,delta,source,runs,configs,commits
ours,coco_det,coco2017,resnet50,a2mim,coco_det/coco2017/resnet50/c4-2x,bbox_mAP,1,40.1,,39.8,0.3,,../runs/paper_r50,../runs/paper_r50/config.py,{C}
ours,coco_det,coco2017,resnet50,a2mim,coco_det/coco2017/resnet50/c4-2x,segm_mAP,1,34.0,,34.9,-0.9,,../runs/paper_r50,../runs/paper_r50/config.py,{C}
ours,coco_det,coco2017,resnet50,a2mim,coco_det/coco2017/resnet50/c4-2x+tiny,bbox_mAP,1,5.0,,,,,../runs/tiny_r50,../runs/tiny_r50/config.py,{C}
ours,coco_det,coco2017,resnet50,a2mim,coco_det/coco2017/resnet50/c4-2x+tiny,segm_mAP,1,4.0,,,,,../runs/tiny_r50,../runs/tiny_r50/config.py,{C}
ours,coco_det,toy_coco,resnet18,a2mim,{TOY},bbox_mAP,2,31.0,1.4142,,,,../runs/a2mim_s0;../runs/a2mim_s1,../runs/a2mim_s0/config.py;../runs/a2mim_s1/config.py,{C};{C}
ours,coco_det,toy_coco,resnet18,a2mim,{TOY},segm_mAP,2,25.5,0.7071,,,,../runs/a2mim_s0;../runs/a2mim_s1,../runs/a2mim_s0/config.py;../runs/a2mim_s1/config.py,{C};{C}
ours,coco_det,toy_coco,resnet18,simmim,{TOY},bbox_mAP,1,28.0,,,,,../runs/simmim_s0,,{C}
ours,coco_det,toy_coco,resnet18,simmim,{TOY},segm_mAP,1,24.0,,,,,../runs/simmim_s0,,{C}
ours,coco_det,toy_coco,resnet18,random,{TOY},bbox_mAP,2,12.0,2.8284,,,,../runs/random_s0;../runs/random_s1,../runs/random_s0/config.py;../runs/random_s1/config.py,{C};{C}
ours,coco_det,toy_coco,resnet18,random,{TOY},segm_mAP,2,9.0,1.4142,,,,../runs/random_s0;../runs/random_s1,../runs/random_s0/config.py;../runs/random_s1/config.py,{C};{C}
published,coco_det,coco2017,resnet50,a2mim,coco_det/coco2017/resnet50/c4-2x,bbox_mAP,,39.8,,,,README | table 3; README | table 3 (test-dev?),,,
published,coco_det,coco2017,resnet50,a2mim,coco_det/coco2017/resnet50/c4-2x,segm_mAP,,34.9,,,,README | table 3; README | table 3 (test-dev?),,,
ours,ade20k_seg,toy_ade,vit_tiny,a2mim,,mIoU,1,40.0,,,,,../runs/seg_a2mim,../runs/seg_a2mim/config.py,{C}
ours,ade20k_seg,toy_ade,vit_tiny,a2mim,,aAcc,1,80.0,,,,,../runs/seg_a2mim,../runs/seg_a2mim/config.py,{C}
"""


def test_tables_are_exactly_as_expected(runs, tmp_path, caplog):
    root, ref = runs
    with caplog.at_level(logging.WARNING, logger="benchmarks.collate"):
        res = collate(root, tmp_path / "out", ref)
    assert res["results"] == 8 and res["tables"] == 2
    assert res["not_tabled"] == [root / "pretrain_r18" / "result.json"]
    assert [p.parent.name for p, _ in res["skipped"]] == ["bad_json", "bad_metric", "no_schema"]
    for name in ("bad_json", "bad_metric", "no_schema"):  # each skip is warned about, naming the file
        assert any(str(root / name / "result.json") in r.getMessage() for r in caplog.records)
    assert (tmp_path / "out" / "leaderboard.md").read_text() == EXPECTED_MD
    assert (tmp_path / "out" / "leaderboard.csv").read_text() == EXPECTED_CSV


def test_html_and_plots(runs, tmp_path):
    root, ref = runs
    res = collate(root, tmp_path / "out", ref)
    page = res["files"]["html"].read_text()
    assert page.startswith("<!doctype html>") and page.count("<table>") == 3  # two tasks + published numbers
    assert '<a href="../runs/a2mim_s0/config.py">config</a>' in page and "<code>0123456</code>" in page
    assert page.count('src="data:image/png;base64,') == 2  # plots embedded: the page stands alone
    assert "<td>README | table 3; README | table 3 (test-dev?)</td>" in page
    for task in ("coco_det", "ade20k_seg"):
        with Image.open(tmp_path / "out" / "plots" / f"{task}.png") as im:
            assert im.format == "PNG" and im.size[0] > 200


def test_output_is_deterministic(runs, tmp_path):
    root, ref = runs
    names = ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "plots/coco_det.png")
    collate(root, tmp_path / "a", ref)
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
        assert e["protocol_key"].startswith(f"{e['task']}/{e['dataset']}/{e['backbone']}/"), e["id"]
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
    assert (tmp_path / "cli" / "leaderboard.md").read_text() == EXPECTED_MD
    assert "8 results, 3 skipped" in capsys.readouterr().out
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
