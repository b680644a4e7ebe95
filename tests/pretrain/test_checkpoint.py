"""Checkpoints: atomic under SIGKILL, weights_only refusal of malicious pickles, rotation, RNG round trip."""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import random
import signal
import time

import numpy as np
import pytest
import torch

from pretrain.checkpoint import (CheckpointDir, CheckpointError, capture_rng, load_checkpoint, restore_rng,
                                 save_checkpoint, state_dict_mismatch)


def _rewrite_forever(path: str) -> None:
    """Child: rewrite `path` with a large checkpoint, again and again, until killed.

    numpy fills the tensors: no torch parallel region in a forked child (OpenMP pools do not survive fork)."""
    torch.set_num_threads(1)
    i = 1
    while True:
        save_checkpoint(path, {"step": i, "w": torch.from_numpy(np.full(32 * 2**20, i, dtype=np.float32))})  # 128 MiB
        i += 1


def test_sigkill_mid_write_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 0, "w": torch.zeros(4)})
    child = mp.get_context("fork").Process(target=_rewrite_forever, args=(str(path),))
    child.start()
    try:
        deadline = time.time() + 60
        while not any(p.name.startswith(".last.pt.") for p in tmp_path.iterdir()):   # a temp file is being written
            assert time.time() < deadline and child.is_alive(), "the child never started writing"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == -signal.SIGKILL
    assert any(p.name.startswith(".last.pt.") for p in tmp_path.iterdir()), "the kill landed between two writes"
    ck = load_checkpoint(path)          # the old file, or a completely written new one - never a torn one
    if ck["step"] == 0:
        assert torch.equal(ck["w"], torch.zeros(4))
    else:
        assert ck["w"].shape == (32 * 2**20,) and bool((ck["w"] == ck["step"]).all())


class _Evil:
    """Unpickling this runs code (writes a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "payload": _Evil(str(marker))}, bad)
    with pytest.raises(CheckpointError, match=r"evil.pt: refused to load.*weights_only=True.*no unsafe fallback"
                                              r".*torch said: Unsupported global: GLOBAL io.open"):
        load_checkpoint(bad)
    assert not marker.exists()
    legacy = tmp_path / "legacy.pkl"   # a plain pickle, not torch's zip format
    legacy.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=2))
    with pytest.raises(CheckpointError, match="refused to load.*GLOBAL io.open"):
        load_checkpoint(legacy)
    legacy.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=5))  # framed: refused even before the GLOBAL
    with pytest.raises(CheckpointError, match="legacy.pkl: not a readable checkpoint"):
        load_checkpoint(legacy)
    assert not marker.exists()


def test_corrupt_and_missing_files_give_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"w": torch.ones(1000)})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"cut.pt: not a readable checkpoint"):
        load_checkpoint(cut)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rotation_keeps_last_and_n_newest(tmp_path):
    d = CheckpointDir(tmp_path / "ck", keep_last=2)
    for step in (10, 20, 30, 40):
        d.save({"step": step, "w": torch.full((3,), float(step))}, step)
    assert [s for s, _ in d.numbered()] == [30, 40]
    ck, path = d.load_latest()
    assert path.name == "last.pt" and ck["step"] == 40
    d.last.unlink()                           # a damaged last.pt (new inode): fall back to the newest numbered file
    d.last.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint.*last.pt: not a readable checkpoint"):
        ck, path = d.load_latest()
    assert path.name == "step_00000040.pt" and ck["step"] == 40
    assert CheckpointDir(tmp_path / "empty").load_latest() is None
    only_last = CheckpointDir(tmp_path / "k0", keep_last=0)
    only_last.save({"step": 1}, 1)
    assert only_last.numbered() == [] and load_checkpoint(only_last.last)["step"] == 1


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leave a cached gaussian in numpy's legacy state
    save_checkpoint(tmp_path / "r.pt", {"rng": capture_rng()})
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    restore_rng(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


def test_stale_temp_files_of_a_killed_save_are_removed_and_nothing_else(tmp_path):
    d = CheckpointDir(tmp_path, keep_last=2)
    d.save({"step": 1}, 1)
    stale = [tmp_path / ".last.pt.a1b2c3.tmp", tmp_path / ".step_00000002.pt.x_9.tmp", tmp_path / ".last.pt.q.lnk"]
    keep = [tmp_path / ".notes.tmp", tmp_path / "step_00000002.pt.tmp", tmp_path / ".config.yaml.zz.tmp"]
    for p in stale + keep:
        p.write_bytes(b"partial")
    with pytest.warns(UserWarning, match=r"removed 3 partial checkpoint file\(s\) of an interrupted save"):
        ck, path = d.load_latest()
    assert ck["step"] == 1 and path.name == "last.pt"
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def test_state_dict_mismatch_names_missing_unexpected_and_misshaped_keys():
    m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))     # 0.weight (3,2) 0.bias 1.weight 1.bias
    sd = dict(m.state_dict())
    sd["0.wieght"] = sd.pop("0.weight")
    sd["1.bias"] = torch.zeros(4)
    assert state_dict_mismatch(m, sd) == ("1 missing ['0.weight']; 1 unexpected ['0.wieght']; 1 shape-mismatched "
                                          "['1.bias: checkpoint (4,) vs model (1,)']")
    assert state_dict_mismatch(m, m.state_dict()) == "keys and shapes agree"
