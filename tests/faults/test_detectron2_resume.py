"""MUST-SHOW: detectron2 resume never unpickles a file found in the output folder. Stock DetectionCheckpointer
reads a `.pkl` named by `last_checkpoint` with plain pickle.load (code runs); the project's SafeCheckpointer loads only
the run's own .pth files inside the folder, through the weights_only loader. Each crafted folder is refused with
a clear error (exit 2) and the payload never runs."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from faultutil import transfer_fixtures

pytestmark = pytest.mark.detectron2
pytest.importorskip("detectron2")

TINY = ["SEED", "0", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32",
        "DATALOADER.NUM_WORKERS", "0", "TEST.PRECISE_BN.ENABLED", "False"]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    fx = transfer_fixtures()
    tmp = tmp_path_factory.mktemp("d2_resume")
    return fx.make_coco(tmp / "coco", 2, 1), fx.export(tmp, "resnet50")


def _evil_pkl(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": Payload(marker)}, "__author__": "x"}, f)


def _evil_pth(path, marker):
    torch.save({"model": {"x": torch.ones(1)}, "iteration": Payload(marker)}, path)


@pytest.mark.parametrize("case", ["pkl_in_folder", "pth_with_code", "path_outside"])
def test_crafted_checkpoint_is_refused_without_running(tmp_path, inputs, capsys, case):
    from transfer.detectron2.train import main
    coco, weights = inputs
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    out.mkdir()
    if case == "pkl_in_folder":
        _evil_pkl(out / "evil.pkl", marker)
        (out / "last_checkpoint").write_text("evil.pkl")
        want = "refused to resume from a '.pkl' file"
    elif case == "pth_with_code":
        _evil_pth(out / "model_0000001.pth", marker)
        (out / "last_checkpoint").write_text("model_0000001.pth")
        want = "refused to load: it holds Python objects other than tensors"
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        torch.save({"model": {}}, elsewhere / "model_final.pth")
        (out / "last_checkpoint").write_text(str(elsewhere / "model_final.pth"))
        want = "refused to resume from a file outside the run folder"
    rc = main(["--config", "r50_fpn_1x", "--weights", str(weights), "--data-root", str(coco), "--output-dir", str(out),
               *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and want in err and "Traceback" not in err, err[-2000:]
    assert not marker.exists() and not (out / "result.json").exists()


def test_the_threat_is_real_with_stock_detectron2(tmp_path):
    """The same .pkl through stock DetectionCheckpointer runs its payload (what SafeCheckpointer prevents)."""
    from detectron2.checkpoint import DetectionCheckpointer
    marker = tmp_path / "PWNED"
    _evil_pkl(tmp_path / "evil.pkl", marker)
    try:
        DetectionCheckpointer(torch.nn.Linear(1, 1))._load_file(str(tmp_path / "evil.pkl"))
    except Exception:       # noqa: BLE001  (it may fail after the payload ran)
        pass
    assert marker.exists()
