"""Fourier views (benchmarks/analysis/spectrum.py) on images with hand-known spectra, and the reconstruction CLI
on a 2-step tiny_r18 pre-training run."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.analysis.reconstruct import main as reconstruct_main, plot_spectra, spectrum_rows
from benchmarks.analysis.spectrum import amplitude, band_edges, radial_bands, radial_profile

REPO = Path(__file__).resolve().parents[2]


def test_radial_bands_by_hand():
    # 8x8, 4 rings of width 0.125 cycles/px; fftfreq(8) = [0, 1, 2, 3, -4, -3, -2, -1] / 8
    b = radial_bands(8, 8, 4)
    assert b[0, 0] == 0                       # DC
    assert b[0, 1] == 1 and b[1, 1] == 1      # 0.125 and 0.177 cycles/px
    assert b[0, 2] == 2 and b[2, 2] == 2      # 0.25 and 0.354 (< 0.375)
    assert b[0, 4] == 3 and b[4, 4] == 3      # Nyquist 0.5 and the corner 0.707 join the last ring
    assert band_edges(4)[1] == (0.125, 0.25) and band_edges(4)[3][1] == math.inf


def test_constant_and_cosine_spectra():
    # constant c: only DC, |F(0,0)| = c * sqrt(H*W) with norm='ortho'
    amp = amplitude(torch.full((1, 3, 16, 16), 0.5)).mean(0)
    prof, counts = radial_profile(amp, 8)
    assert prof[0].item() == pytest.approx(0.5 * 16) and counts[0] == 1
    assert torch.allclose(prof[1:], torch.zeros(7, dtype=torch.float64), atol=1e-12)
    # cos(2 pi * 3 x / 16) along x: |F| = sqrt(256)/2 at (0, +-3), zero elsewhere -> only ring 3 (rho in [3, 4)
    # cycles/image) is nonzero; it holds the 20 integer points with 9 <= a^2 + b^2 < 16
    xs = torch.arange(16, dtype=torch.float64)
    img = torch.cos(2 * math.pi * 3 * xs / 16).expand(1, 1, 16, 16)
    prof, counts = radial_profile(amplitude(img).mean(0), 8)
    assert counts[3] == 20
    assert prof[3].item() == pytest.approx(2 * 8.0 / 20)
    assert torch.allclose(prof[[0, 1, 2, 4, 5, 6, 7]], torch.zeros(7, dtype=torch.float64), atol=1e-12)


def test_spectrum_rows_and_plot(tmp_path):
    g = torch.Generator().manual_seed(0)
    target = amplitude(torch.randn(2, 3, 16, 16, generator=g)).mean(0)
    rows = spectrum_rows(target, 2 * target, 8)
    assert [r[0] for r in rows] == list(range(8)) and sum(r[3] for r in rows) == 256
    assert all(r[6] == pytest.approx(2.0) for r in rows)     # reconstruction = 2 x target in every ring
    path = plot_spectra(tmp_path / "fourier.png", target, 2 * target, 8)
    with Image.open(path) as im:
        assert im.format == "PNG"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step tiny_r18 pre-training run (64 px) on 8 generated images."""
    from benchmarks.toydata import write_imagenet

    root = tmp_path_factory.mktemp("reconstruct")
    write_imagenet(root / "data", 64, 0, 1, 0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pretrain.train", "--config", str(REPO / "pretrain/configs/tiny_r18.yaml"),
           "run.max_steps=2", f"run.out_dir={root / 'run'}", f"data.root={root / 'data' / 'train'}",
           "data.kind=image_folder"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_cli_gallery_spectrum_csv(tiny_run, tmp_path):
    out = tmp_path / "out"
    images = tiny_run / "data" / "train"
    assert reconstruct_main(["--run", str(tiny_run / "run"), "--images", str(images), "--out", str(out),
                             "--n", "4", "--device", "cpu"]) == 0
    with Image.open(out / "reconstruction.png") as im:
        assert im.size == (4 * 64 + 5 * 2, 3 * 64 + 4 * 2)   # 4 columns x 3 rows of 64 px, 2 px padding
    with Image.open(out / "fourier.png") as im:
        assert im.format == "PNG"
    with open(out / "spectrum.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 32 and rows[0]["n_coeffs"] == "1"
    assert sum(int(r["n_coeffs"]) for r in rows) == 64 * 64
    amps = np.array([[float(r["amp_target"]), float(r["amp_recon"])] for r in rows])
    assert np.isfinite(amps).all() and (amps > 0).all()
    info = json.loads((out / "reconstruct.json").read_text())
    assert info["step"] == 2 and len(info["images"]) == 4 and info["masked_l1_normalised"] > 0


def test_cli_bad_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert reconstruct_main(["--run", str(tmp_path / "empty"), "--images", str(tmp_path), "--out",
                             str(tmp_path / "o")]) == 1
    assert "empty" in capsys.readouterr().err
