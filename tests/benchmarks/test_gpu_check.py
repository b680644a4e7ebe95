"""benchmarks/perf/gpu_check.py: refuses clearly without CUDA; on a GPU host (marker gpu) its sections pass."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_gpu_check_says_no_cuda_and_exits_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "benchmarks.perf.gpu_check", "--out", str(tmp_path / "g.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no CUDA device" in p.stderr
    assert not (tmp_path / "g.json").exists()


@pytest.mark.gpu
def test_gpu_check_sections_pass_on_a_gpu(tmp_path):
    out = tmp_path / "g.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.perf.gpu_check", "--out", str(out), "--batch", "32",
                        "--skip", "maxbatch", "compile"], cwd=ROOT, timeout=900)
    res = json.loads(out.read_text())
    assert p.returncode == 0, res
    assert res["ddp"]["backend"] == "nccl" and res["ddp"]["max_abs_grad_diff"] < 1e-3
    assert res["engine"]["start_step"] == 12
    assert all(r["time_ratio"] > 0 for r in res["step"]["results"])
