"""End-to-end trainer images/s per data.backend against the model-only step images/s, measured in the same run.

    python -m benchmarks.perf.datapath --device cuda --models resnet50 vit_base --backends pil torchcodec dali \
        --images 2048 --batch 128 --steps 60 --workers 12 --out datapath.json

Data: `--images` ImageNet-sized JPEGs (500x375 and the other sizes of benchmarks/perf/loader.py, quality 90) in the
ImageNet-folder format, written once and read by every run.
  model_only: benchmarks.perf.pretrain_step's A²MIM step (the same model, precision and memory format) on a batch
              already on the device: the ceiling of any data path.
  trainer   : `python -m pretrain.train` with the model's pre-training config, data.backend=B, the given precision,
              channels_last, run.compile=false (the model-only step is eager too: the ratio is the data path's),
              run.max_steps=--steps; images/s = the median of metrics.jsonl's images_per_s after the first two
              logged windows (worker start-up and cuDNN autotuning excluded).
ratio = trainer / model_only (target >= 0.9 on a GPU: the device is busy >= 90 % of the time).
On a CPU (--device cpu, for a smoke run of this script) fp32 and the tiny sizes apply; the ratios then mean little.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pretrain.fileio import atomic_write_json

CONFIGS = {"resnet50": "pretrain/configs/a2mim_r50_ep100.yaml", "vit_base": "pretrain/configs/a2mim_vit_b_ep800.yaml",
           "resnet18": "pretrain/configs/tiny_r18.yaml"}
TARGET = 0.9


def model_only(model: str, args, out: Path) -> float:
    """A²MIM step images/s on a device-resident batch (benchmarks.perf.pretrain_step)."""
    cmd = [sys.executable, "-m", "benchmarks.perf.pretrain_step", "--device", args.device, "--models", model,
           "--precisions", args.precision, "--size", str(args.size), "--batch", str(args.batch), "--iters",
           str(args.model_iters), "--warmup", "3", "--no-memory", "--out", str(out)]
    if args.device == "cuda":
        cmd.append("--channels-last")
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())["results"][0]["a2mim_img_per_s"]


def trainer(model: str, backend: str, data: Path, args, run: Path) -> dict:
    """The real trainer's steady-state images/s on data.backend=`backend`."""
    log_every = max(1, args.steps // 10)
    cmd = [sys.executable, "-m", "pretrain.train", "--config", CONFIGS[model], f"data.root={data}",
           "data.kind=imagenet_folder", f"data.backend={backend}", f"data.num_workers={args.workers}",
           f"run.out_dir={run}", f"run.device={args.device}", f"run.precision={args.precision}",
           f"run.channels_last={str(args.device == 'cuda').lower()}", "run.compile=false",
           f"run.batch_per_gpu={args.batch}", f"run.max_steps={args.steps}", f"run.log_interval={log_every}",
           f"run.ckpt_interval={args.steps}", "run.image_interval=0", "run.syncbn=false",
           f"model.input_size={args.size}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": f"exit code {p.returncode}: {p.stderr.strip().splitlines()[-1:] or ''}"}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r]
    steady = rates[2:] or rates
    return {"img_per_s": statistics.median(steady), "windows": [round(r, 1) for r in rates],
            "wall_s": round(time.perf_counter() - t0, 1)}


def available(backends: list[str]) -> dict[str, str | None]:
    """backend -> None if its library imports here, else why not."""
    from pretrain.gpu_data import missing_library
    return {b: missing_library(b) for b in backends}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", nargs="+", default=["resnet50", "vit_base"], choices=sorted(CONFIGS))
    ap.add_argument("--backends", nargs="+", default=["pil", "torchcodec", "dali"],
                    choices=["pil", "torchcodec", "dali"])
    ap.add_argument("--precision", default=None, help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--model-iters", type=int, default=20)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    from benchmarks.perf.loader import write_jpegs

    wd = Path(args.workdir or tempfile.mkdtemp(prefix="a2mim_datapath_"))
    data = wd / "images"
    if not data.is_dir():
        write_jpegs(data, args.images, classes=8)        # data/train/c<k>/*.JPEG
    missing = available(args.backends)
    result = {"config": vars(args), "target": TARGET, "unavailable": {b: m for b, m in missing.items() if m},
              "rows": []}
    for model in args.models:
        ceiling = model_only(model, args, wd / f"model_{model}.json")
        for b in args.backends:
            row = {"model": model, "backend": b, "model_only_img_per_s": ceiling}
            row.update({"error": f"not importable: {missing[b]}"} if missing[b] else
                       trainer(model, b, data, args, wd / f"run_{model}_{b}"))
            if "img_per_s" in row:
                row["ratio"] = row["img_per_s"] / ceiling
            result["rows"].append(row)
            if args.out:
                atomic_write_json(args.out, result)
            print(f"{model:9s} {b:11s} trainer {row.get('img_per_s', float('nan')):8.1f} img/s  model-only "
                  f"{ceiling:8.1f} img/s  ratio {row.get('ratio', float('nan')):.3f} (target >= {TARGET})"
                  + (f"  [{row['error']}]" if "error" in row else ""), flush=True)
    return result


if __name__ == "__main__":
    main()
