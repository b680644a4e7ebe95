"""MUST-SHOW (newcomer issue): a 2-step classification run of the paper preset is labelled for what it ran.

rsb_a2_r50 (fp16 preset) with run.max_steps=2 on an ImageNet folder WITHOUT the toy card: the protocol carries the
'+overrides' marker, '@pt<N>' is the weights' own epoch count (the sidecar: 0) and not the pre-training config's 300,
the fp16 preset runs fp32 on the CPU with one warning, and the collator sets no published number (nor a delta) beside
it although the reference holds rsb-a2@pt300 = 80.4 for A²MIM R50.
"""
from __future__ import annotations

import json
import logging

import pytest

from benchmarks.toydata import write_imagenet


@pytest.mark.slow
def test_two_step_rsb_a2_run_is_marked_and_never_compared(tmp_path, caplog):
    from benchmarks.collate import collate
    from pretrain.export import export_random
    from transfer.classification.train import main

    root = tmp_path / "imagenet"
    write_imagenet(root, size=32, seed=0, n_train=2, n_val=1)
    (root / "dataset.json").unlink(missing_ok=True)            # a real-looking root: no toy card
    weights = export_random(tmp_path / "r50.safetensors", ["model.preset=resnet50"], method="a2mim")
    meta = json.loads(weights.with_suffix(".json").read_text())
    meta.setdefault("pretrain_config", {}).setdefault("schedule", {})["epochs"] = 300   # as a 300-ep config says
    weights.with_suffix(".json").write_text(json.dumps(meta))
    work = tmp_path / "runs" / "ft"
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        rc = main(["rsb_a2_r50", "--weights", str(weights), "--data-root", str(root), "--work-dir", str(work),
                   "run.max_steps=2", "run.batch_per_gpu=4", "data.num_workers=0", "data.repeated_aug=1",
                   "run.syncbn=false", "data.train_size=32", "data.test_size=32", "data.test_resize=36"])
    assert rc == 0
    warned = [r.getMessage() for r in caplog.records if "on a CPU: running fp32" in r.getMessage()]
    assert len(warned) == 1 and "run.precision=fp16" in warned[0]
    res = json.loads((work / "result.json").read_text())
    assert res["dataset"] == "imagenet1k" and res["method"] == "a2mim"
    assert res["protocol"] == "rsb-a2@pt0+overrides", res["protocol"]       # not rsb-a2@pt300
    assert "+overrides" in res["protocol_key"]
    collate(tmp_path / "runs", tmp_path / "board")
    import csv
    rows = list(csv.DictReader((tmp_path / "board" / "leaderboard.csv").open()))
    ours = [r for r in rows if r["kind"] == "ours" and r["method"] == "a2mim"]
    assert ours and all(r["protocol"].endswith("+overrides") for r in ours), ours
    assert all(r["published"] == "" and r["delta"] == "" for r in ours), ours      # no paper number, no delta
