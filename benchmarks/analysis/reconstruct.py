"""Reconstructions and their Fourier spectrum for a pre-training checkpoint.

    python -m benchmarks.analysis.reconstruct --run RUN_DIR_or_CHECKPOINT --images FOLDER --out DIR
        [--n 8] [--seed 0] [--bands N] [--device cpu]

The model is rebuilt from the config text stored in the checkpoint (pretrain.engine.build_model) and loaded
strictly. n images of FOLDER (any layout; evenly spaced over the sorted list) are resized + centre-cropped to the
model's input size and ImageNet-normalised; image i gets the model's own block mask drawn from
default_rng([seed, i]). Eval mode.

DIR/reconstruction.png  one column per image; rows: original / masked input (the model's fill) / reconstruction,
                        de-normalised to RGB (pretrain.runlog.save_reconstruction)
DIR/fourier.png         log(1 + |fft2(., ortho)|), centred, averaged over images and channels, of the targets and
                        of the full reconstructions (same colour scale), their log ratio, and the radial profiles
DIR/spectrum.csv        per radial frequency band (cycles/pixel): coefficient count, mean amplitude of the targets
                        and of the reconstructions, and their ratio (spectrum.py defines the bands)
DIR/reconstruct.json    checkpoint, step, images, masked-pixel L1 (normalised units)
The spectra are those of the normalised images, as the frequency loss sees them (spec §2).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.analysis.images import AnalysisDataError, load_images
from benchmarks.analysis.outputs import new_figure, save_png, write_csv
from benchmarks.analysis.spectrum import amplitude, band_edges, centred_log, radial_profile
from pretrain.fileio import atomic_write_json


def load_pretrain_model(src: str | Path) -> tuple[torch.nn.Module, dict, Path]:
    """-> (A2MIM model in eval mode, {'step', 'epoch'}, checkpoint path) from a run folder or a checkpoint."""
    from pretrain.export import load_pretrain_model as load

    model, _, step, epoch, path = load(src)
    return model.eval(), {"step": step, "epoch": epoch}, path


def pick_images(folder: str | Path, n: int) -> list[str]:
    from pretrain.data import DataError, list_images

    try:
        paths = list_images(folder, "image_folder")
    except DataError as e:
        raise AnalysisDataError(str(e)) from None
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    idx = np.unique(np.linspace(0, len(paths) - 1, min(n, len(paths))).round().astype(int))
    return [paths[i] for i in idx]


def plot_spectra(path: Path, amp_target: torch.Tensor, amp_recon: torch.Tensor, bands: int) -> Path:
    """amp_* (H, W) mean amplitudes (unshifted) -> the 4-panel figure described in the module docstring."""
    lt, lr = centred_log(amp_target).numpy(), centred_log(amp_recon).numpy()
    vmax = float(max(lt.max(), lr.max()))
    fig, axes = new_figure(1, 4, figsize=(17.0, 3.8), layout="constrained")
    for ax, img, title in ((axes[0], lt, "targets"), (axes[1], lr, "reconstructions")):
        im = ax.imshow(img, cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_title(f"log(1+|F|) {title}")
        fig.colorbar(im, ax=ax)
    diff = lr - lt
    lim = float(np.abs(diff).max()) or 1.0
    im = axes[2].imshow(diff, cmap="coolwarm", vmin=-lim, vmax=lim)
    axes[2].set_title("log(1+|F_rec|) - log(1+|F_tgt|)")
    fig.colorbar(im, ax=axes[2])
    for ax in axes[:3]:
        ax.set_xticks([])
        ax.set_yticks([])
    centres = [lo + 0.25 / bands for lo, _ in band_edges(bands)]
    for amp, label in ((amp_target, "targets"), (amp_recon, "reconstructions")):
        axes[3].semilogy(centres, radial_profile(amp, bands)[0].numpy(), marker="o", markersize=3, label=label)
    axes[3].set_xlabel("radial frequency (cycles / pixel)")
    axes[3].set_ylabel("mean |F|")
    axes[3].grid(alpha=0.3)
    axes[3].legend()
    return save_png(fig, path)


def spectrum_rows(amp_target: torch.Tensor, amp_recon: torch.Tensor, bands: int) -> list[list]:
    pt, counts = radial_profile(amp_target, bands)
    pr, _ = radial_profile(amp_recon, bands)
    return [[k, lo, hi, int(counts[k]), float(pt[k]), float(pr[k]), float(pr[k] / pt[k]) if pt[k] > 0 else float("nan")]
            for k, (lo, hi) in enumerate(band_edges(bands))]


def run(args) -> Path:
    from pretrain.masking import upsample_mask
    from pretrain.runlog import save_reconstruction

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model, info, ckpt = load_pretrain_model(args.run)
    model.to(device)
    paths = pick_images(args.images, args.n)
    img, kept, skipped = load_images(paths, model.input_size)
    gen = model.mask_generator()
    mask = torch.stack([gen(np.random.default_rng([args.seed, i])) for i in range(len(img))])
    img, mask = img.to(device), mask.to(device)
    save_reconstruction(out / "reconstruction.png", model, img, mask)
    _, x_rec = model.reconstruct(img, mask)
    bands = args.bands or min(img.shape[-2:]) // 2
    amp_t, amp_r = amplitude(img.cpu()).mean(0), amplitude(x_rec.cpu()).mean(0)       # (H, W)
    plot_spectra(out / "fourier.png", amp_t, amp_r, bands)
    write_csv(out / "spectrum.csv", ["band", "freq_lo", "freq_hi", "n_coeffs", "amp_target", "amp_recon",
                                     "ratio_recon_target"], spectrum_rows(amp_t, amp_r, bands))
    m = upsample_mask(mask, img.shape[-2:], dtype=img.dtype)                          # (B, 1, H, W)
    l1 = float(((x_rec - img).abs() * m).sum() / (m.sum() * img.shape[1]).clamp_min(1))
    atomic_write_json(out / "reconstruct.json", {
        "checkpoint": str(ckpt), **info, "method": model.method, "preset": model.preset.name,
        "images": [paths[i] for i in kept], "skipped_images": skipped, "seed": args.seed, "bands": bands,
        "masked_l1_normalised": l1})
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m benchmarks.analysis.reconstruct", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="pre-training run folder or checkpoint file")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=8, help="images in the gallery / spectra")
    p.add_argument("--seed", type=int, default=0, help="mask seed")
    p.add_argument("--bands", type=int, default=None, help="radial frequency bands (default: min(H, W) // 2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from pretrain.checkpoint import CheckpointError
    from pretrain.config import ConfigError
    try:
        out = run(args)
    except (AnalysisDataError, CheckpointError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(out / "reconstruction.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
