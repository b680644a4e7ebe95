"""Fault injection on real runs: SIGKILL in the middle of a training checkpoint write, a NaN loss, a full disk.

Each leaves the last good checkpoint loadable and byte-identical, and ends with a message naming what happened."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from imgfactory import CONFIGS, REPO, child_env, make_images
from pretrain.checkpoint import CheckpointDir, load_checkpoint, save_checkpoint
from pretrain.config import load_config
from pretrain.engine import train
from pretrain.fileio import sha256_file

# the child trains normally, but the fsync of step 4's checkpoint temp file announces itself and hangs
_SLOW_FSYNC_TRAIN = textwrap.dedent("""
    import os, sys, time
    real_fsync = os.fsync
    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".step_00000004.pt." in name:
            open(sys.argv[1], "w").write(name)
            time.sleep(300)
        real_fsync(fd)
    os.fsync = fsync
    from pretrain.train import main
    sys.exit(main(sys.argv[2:]))
""")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _overrides(data, run, *extra):
    return [f"data.root={data}", f"run.out_dir={run}", "run.batch_per_gpu=2", "run.ckpt_interval=2",
            "run.log_interval=1", "run.image_interval=0", "run.export_at_end=false", "run.tensorboard=false", *extra]


def _ckpt_files(run: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted((run / "checkpoints").iterdir())}


@pytest.mark.slow                      # a training subprocess (interpreter + torch start): ~15-30 s on 2 cores
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see which file is being fsynced")
def test_sigkill_during_a_training_checkpoint_write_then_resume(tmp_path):
    data = make_images(tmp_path / "imgs", n=4)
    run, marker = tmp_path / "run", tmp_path / "writing"
    script = tmp_path / "slow_fsync_train.py"
    script.write_text(_SLOW_FSYNC_TRAIN)
    args = ["--config", str(CONFIGS / "tiny_r18.yaml"), *_overrides(data, run, "run.max_steps=4")]
    child = subprocess.Popen([sys.executable, str(script), str(marker), *args], cwd=REPO, env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the child never reached the step-4 checkpoint"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)             # step 4's data is written, not yet fsynced nor renamed
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    partial = marker.read_text()
    ckdir = run / "checkpoints"
    assert Path(partial).parent == ckdir and Path(partial).exists()     # the torn temp file is still there
    good = _ckpt_files(run)
    assert set(good) == {"last.pt", "step_00000002.pt", Path(partial).name}
    assert load_checkpoint(ckdir / "last.pt")["step"] == 2 and good["last.pt"] == good["step_00000002.pt"]
    # a fresh start resumes from step 2, removes the partial file, and finishes
    with pytest.warns(UserWarning, match=r"removed 1 partial checkpoint file\(s\) of an interrupted save: "
                                         r"\['\.step_00000004\.pt\..*\.tmp'\]"):
        train(load_config(CONFIGS / "tiny_r18.yaml", _overrides(data, run, "run.max_steps=4")))
    info = json.loads((run / "run_info.json").read_text())
    assert info["start_step"] == 2 and info["resumed_from"].endswith("last.pt")
    assert sorted(p.name for p in ckdir.iterdir()) == ["last.pt", "step_00000002.pt", "step_00000004.pt"]
    assert load_checkpoint(ckdir / "last.pt")["step"] == 4 and json.loads((run / "done").read_text())["step"] == 4
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-2:] == [3, 4]


def test_nan_loss_stops_the_cli_and_leaves_the_checkpoints_untouched(tmp_path, capsys):
    from pretrain.train import main
    data = make_images(tmp_path / "imgs", n=4)
    run = tmp_path / "run"
    base = ["--config", str(CONFIGS / "tiny_r18.yaml"), *_overrides(data, run)]
    assert main([*base, "run.max_steps=2"]) == 0
    before = _ckpt_files(run)
    capsys.readouterr()
    assert main([*base, "run.max_steps=6", "run.debug_nan_step=3"]) == 1
    err = capsys.readouterr().err
    (first,) = [ln[ln.index("error:"):] for ln in err.splitlines() if "error:" in ln]   # tqdm's bar shares stderr
    assert first.startswith("error: FloatingPointError: Loss became infinite or NaN at step=3 (epoch 1); no "
                            "checkpoint of this state is written. Losses: {'loss': nan, 'loss_spatial': ")
    assert "'loss_freq': " in first and "Traceback" not in err
    assert _ckpt_files(run) == before                              # same files, same bytes, no temp files
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2


_FULL_DISK_SAVE = textwrap.dedent("""
    import resource, signal, sys, torch
    from pretrain.checkpoint import CheckpointDir
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # write() then fails with EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        CheckpointDir(sys.argv[1], keep_last=2).save({"step": 2, "w": torch.zeros(1 << 20)}, 2)   # 4 MiB > 1 MiB
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
""")


def _assert_full_disk_outcome(ckdir: Path, before: dict, message: str) -> None:
    assert message
    assert {p.name: sha256_file(p) for p in ckdir.iterdir()} == before          # untouched, no temp file left
    assert load_checkpoint(ckdir / "last.pt")["step"] == 1


def test_file_size_limit_on_save_is_a_clear_error(tmp_path):
    ckdir = tmp_path / "checkpoints"
    CheckpointDir(ckdir, keep_last=2).save({"step": 1, "w": torch.zeros(4)}, 1)
    before = {p.name: sha256_file(p) for p in ckdir.iterdir()}
    p = subprocess.run([sys.executable, "-c", _FULL_DISK_SAVE, str(ckdir)], cwd=REPO, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr[-3000:]
    assert p.stderr.strip() == (f"error: [Errno 27] file too large (file-size limit, e.g. ulimit -f) while writing "
                                f"{ckdir}/step_00000002.pt; the previous step_00000002.pt (if any) is untouched and "
                                f"the partial temp file was removed")
    _assert_full_disk_outcome(ckdir, before, p.stderr)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_full_disk_on_save_is_a_clear_error(tmp_path):
    mnt = tmp_path / "small_disk"
    if not _mount_tmpfs(mnt, "1m"):
        pytest.skip("mounting a 1 MiB tmpfs needs root (test_file_size_limit_on_save_is_a_clear_error covers the "
                    "same path with RLIMIT_FSIZE)")
    try:
        ckdir = mnt / "checkpoints"
        d = CheckpointDir(ckdir, keep_last=2)
        d.save({"step": 1, "w": torch.zeros(4)}, 1)
        before = {p.name: sha256_file(p) for p in ckdir.iterdir()}
        with pytest.raises(OSError) as e:
            d.save({"step": 2, "w": torch.zeros(1 << 20)}, 2)                  # 4 MiB on a 1 MiB disk
        assert e.value.errno == 28 and str(e.value) == (
            f"[Errno 28] no space left on device while writing {ckdir}/step_00000002.pt; the previous "
            f"step_00000002.pt (if any) is untouched and the partial temp file was removed")
        _assert_full_disk_outcome(ckdir, before, str(e.value))
        with pytest.raises(OSError, match=r"no space left on device while writing .*last.pt; the previous last.pt"):
            save_checkpoint(ckdir / "last.pt", {"w": torch.zeros(1 << 20)})  # the same for a plain overwrite
        _assert_full_disk_outcome(ckdir, before, "again")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
