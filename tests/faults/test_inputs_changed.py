"""MUST-SHOW: a finished run folder whose inputs changed (settings, data, weights) says so and refuses; the same
command again is 'complete'; --force-new moves the old folder aside (nothing deleted) and starts fresh."""
from __future__ import annotations

import json

import pytest

import faultutil  # noqa: F401  (puts tests/pretrain on the path)
from imgfactory import CONFIGS, make_images
from pretrain.train import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_changed_settings_data_and_force_new(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=8)
    run = tmp_path / "run"
    base = ["--config", str(CONFIGS / "tiny_r18.yaml"), f"data.root={data}", f"run.out_dir={run}", "run.max_steps=2",
            "run.image_interval=0", "run.tensorboard=false", "data.num_workers=0", "run.batch_per_gpu=4"]
    assert main(base) == 0 and (run / "done").is_file()
    first = json.loads((run / "result.json").read_text())["time"]
    assert main(base) == 0                                             # the same command: complete, nothing done
    assert json.loads((run / "result.json").read_text())["time"] == first
    capsys.readouterr()
    assert main([*base, "optim.base_lr=1e-2"]) == 1
    err = capsys.readouterr().err
    assert "holds a complete run made from other inputs (settings changed: ['optim.base_lr'])" in err
    assert "--force-new" in err
    make_images(tmp_path / "imgs" / "more", n=1, seed=5)              # one image more: the data changed
    assert main(base) == 1 and "data changed" in capsys.readouterr().err
    assert main(["--force-new", *base, "optim.base_lr=1e-2"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and (moved[0] / "done").is_file() and (moved[0] / "checkpoints" / "last.pt").is_file()
    assert json.loads((run / "result.json").read_text())["time"] != first
    assert json.loads((run / "inputs.json").read_text())["config"]["optim.base_lr"] == 1e-2


def test_a_run_in_progress_may_continue_with_other_settings_but_not_other_data(tmp_path, capsys, caplog):
    data = make_images(tmp_path / "imgs", n=8)
    run = tmp_path / "run"
    base = ["--config", str(CONFIGS / "tiny_r18.yaml"), f"data.root={data}", f"run.out_dir={run}",
            "run.image_interval=0", "run.tensorboard=false", "data.num_workers=0", "run.batch_per_gpu=4",
            "run.ckpt_interval=1"]
    assert main([*base, "run.max_steps=2"]) == 0
    (run / "done").unlink()
    (run / "result.json").unlink()                                     # as if killed before it finished
    assert main([*base, "run.max_steps=3"]) == 0                       # a longer run: allowed, with a warning
    assert "settings changed since it started: ['run.max_steps']" in caplog.text
    (run / "done").unlink()
    (run / "result.json").unlink()
    make_images(tmp_path / "imgs" / "more", n=1, seed=5)
    assert main([*base, "run.max_steps=4"]) == 1
    assert "holds a run in progress made from other inputs (data changed" in capsys.readouterr().err
