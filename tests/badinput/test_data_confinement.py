"""COCO file_name confined to the split's image folder: an absolute path, a '..' component or a symbolic link
leading out is an error naming the annotation file, the image index/id and the file_name, through every entry
point (check_coco_json, the mmdet pre-flight, the detectron2 pre-flight, `python -m pretrain.verify_data`), and
the outside file is never opened."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import corpus
from pretrain.datacheck import DatasetError
from pretrain.datacheck_coco import check_coco_json

REPO = Path(__file__).resolve().parents[2]
MMDET_CFG = REPO / "transfer/mmdet/configs/mask_rcnn_r50_fpn_1x.py"


def _name(index: int, value):
    def mutate(data):
        data["images"][index]["file_name"] = value
    return mutate


@pytest.fixture
def opened(monkeypatch):
    """Every path PIL is asked to open (the checks run in-process: one chunk, no pool)."""
    seen: list[str] = []
    real = Image.open

    def spy(fp, *a, **kw):
        seen.append(str(fp))
        return real(fp, *a, **kw)
    monkeypatch.setattr(Image, "open", spy)
    return seen


def _secret(tmp_path: Path) -> Path:
    return corpus.truncated_jpeg(tmp_path / "outside", "secret.jpg")     # unreadable: opening it would show


def test_absolute_file_name_through_the_mmdet_preflight(tmp_path, coco80, opened, tally):
    from transfer.datacheck import preflight
    secret = _secret(tmp_path)
    root = corpus.coco(tmp_path / "coco", coco80, "train2017", _name(1, str(secret)))
    corpus.coco(root, coco80, "val2017")
    cfg = corpus.openmmlab_config(MMDET_CFG, root)
    with pytest.raises(DatasetError) as e:
        preflight(cfg, "mmdet", work_dir=tmp_path / "w")
    msg = str(e.value)
    assert re.search(rf"BAD  \S*instances_train2017.json: images\[1\] \(id 2\): file_name '{re.escape(str(secret))}' "
                     r"is an absolute path; expected a path relative to the image folder \(\S*train2017\); the file "
                     r"is not read", msg), msg
    assert str(secret) not in opened and "unreadable image" not in msg
    tally.error("coco_file_name_absolute")


def test_dotdot_file_name_through_the_verify_data_cli(tmp_path, tally):
    secret = _secret(tmp_path)
    root = corpus.coco(tmp_path / "coco", split="val2017", mutate=_name(0, "../../outside/secret.jpg"))
    p = subprocess.run([sys.executable, "-m", "pretrain.verify_data", str(root), "--workers", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert (f"BAD  {root}/annotations/instances_val2017.json: images[0] (id 1): file_name "
            f"'../../outside/secret.jpg' has a '..' component; expected a path inside the image folder "
            f"({root}/val2017); the file is not read") in p.stdout.splitlines(), p.stdout
    assert str(secret) not in p.stdout and "unreadable image" not in p.stdout
    tally.error("coco_file_name_dotdot")


def test_symlink_leading_out_through_the_detectron2_preflight(tmp_path, opened, capsys, tally):
    from transfer.datacheck import preflight_coco_root
    secret = _secret(tmp_path)
    root = corpus.coco(tmp_path / "coco", split="train2017", mutate=_name(0, "linked.jpg"))
    corpus.coco(root, split="val2017")
    (root / "train2017" / "linked.jpg").symlink_to(secret)
    with pytest.raises(DatasetError) as e:
        preflight_coco_root(root)
    assert re.search(r"instances_train2017.json: images\[0\] \(id 1\): file_name 'linked.jpg' resolves to "
                     rf"{re.escape(str(secret.resolve()))}, outside the image folder", str(e.value)), str(e.value)
    assert str(secret) not in opened and not any(o.endswith("linked.jpg") for o in opened)
    tally.error("coco_file_name_symlink_out")


@pytest.mark.parametrize("value,why", [(7, "expected a non-empty string"), ("", "expected a non-empty string"),
                                       ("a\x00b.jpg", "contains a NUL byte"), (None, "expected a non-empty string")])
def test_file_name_not_a_relative_path_string(tmp_path, value, why, tally):
    root = corpus.coco(tmp_path / "coco", split="val2017", mutate=_name(1, value))
    rep, files = check_coco_json(root / "annotations/instances_val2017.json", root / "val2017")
    (err,) = rep.errors
    assert err.path.endswith("instances_val2017.json") and err.reason.startswith(
        f"images[1] (id 2): file_name {value!r} {why}"), err
    assert [Path(f[0]).name for f in files] == ["000000000001.jpg"]      # the refused image is not listed
    tally.error(f"coco_file_name_{type(value).__name__}_{len(value) if isinstance(value, str) else 0}")


def test_nested_names_and_a_linked_image_folder_are_accepted(tmp_path, tally):
    """Confinement is about the json: a sub-folder inside the split and a split folder that is itself a link
    (images kept on another disk) are fine."""
    store = corpus.coco(tmp_path / "store", split="val2017", mutate=_name(0, "sub/000000000001.jpg"))
    (store / "val2017" / "sub").mkdir()
    (store / "val2017" / "000000000001.jpg").rename(store / "val2017" / "sub" / "000000000001.jpg")
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(
        (store / "annotations" / "instances_val2017.json").read_text())
    (root / "val2017").symlink_to(store / "val2017", target_is_directory=True)
    rep, files = check_coco_json(root / "annotations/instances_val2017.json", root / "val2017")
    assert rep.findings == [] and len(files) == 2
    tally.decoded("coco_file_name_nested_and_linked_folder")
