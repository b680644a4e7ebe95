"""A²MIM train step vs the bare backbone's forward+backward (+ the same optimizer step), on the same batch.

    python -m benchmarks.perf.pretrain_step --models resnet50 convnext_tiny vit_base --precisions fp32 bf16 \
        --batch 8 --iters 3 --out perf.json [--channels-last] [--compile] [--device cuda]

Time: both variants live in ONE process and are stepped alternately (order flipped every iteration), so load
from other processes hits both alike; median wall-clock AND median process CPU time per step are reported
(on a shared CPU host the CPU-time ratio is the steadier estimate of the work; on a quiet one they agree).
  bare  : loss = backbone(img).float().mean()  (timm model without classifier; pooled features)
  a2mim : loss = A2MIM(img, mask)              (mean fill, token, decoder, spatial + frequency loss)
  both  : backward, fused AdamW step, zero_grad(set_to_none=True).
Peak memory: CPU has no allocator statistics and tracemalloc does not see tensor memory, so each
(model, precision, variant) runs alone in a fresh subprocess and reports VmHWM (the kernel's resident-set
high-water mark of that process) minus its RSS right before the model is built: params + grads + AdamW
state + activations. glibc is told to mmap every block >= 64 KiB so that freed tensors leave the resident
set at once.
Two steps run there, so the peak includes the optimizer state during the second backward.
On CUDA: torch.cuda.max_memory_allocated around each variant (built alone), minus the memory before it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np
import torch

from benchmarks.perf.timing import ratios, time_alternating
from pretrain.a2mim import A2MIM
from pretrain.fileio import atomic_write_json
from pretrain.masking import BlockMaskGenerator
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import PRESETS, get_preset

# time targets of issue #10 (A²MIM step / bare step); ConvNeXt-T is measured and reported without one
TARGETS = {"resnet50": 1.10, "vit_base": 1.05, "memory": 1.15}
DEFAULT_MODELS = ("resnet50", "convnext_tiny", "vit_base")
VARIANTS = ("bare", "a2mim")


def _batch(model_name: str, args, device):
    """Random normalised images and A²MIM masks (as the loader would deliver them)."""
    g = torch.Generator().manual_seed(0)
    img = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    gen = BlockMaskGenerator(args.size, 32, get_preset(model_name).inject_stride, 0.6)
    rng = np.random.default_rng(0)
    mask = torch.stack([gen(rng) for _ in range(args.batch)])
    if args.channels_last:
        img = img.contiguous(memory_format=torch.channels_last)
    return img.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def build_step(variant: str, model_name: str, args, device):
    """-> step() running one full train step of `variant` on a fixed batch."""
    torch.manual_seed(0)
    preset = get_preset(model_name)
    if variant == "a2mim":
        model = A2MIM(preset, input_size=args.size)
        params = model.param_groups(0.05)
    else:
        model = build_backbone(preset, img_size=args.size)
        params = model.parameters()
    model.to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, fused=True)   # fused kernels: CPU and CUDA
    fwd = torch.compile(model) if args.compile else model
    img, mask = _batch(model_name, args, device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step():
        with amp:
            loss = fwd(img, mask)[0] if variant == "a2mim" else fwd(img).float().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return loss
    return step


def time_pair(model_name: str, args, device) -> dict:
    """Median wall-clock and process-CPU seconds per step of both variants, stepped alternately."""
    steps = {v: build_step(v, model_name, args, device) for v in VARIANTS}

    def check(v, it, loss):
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{model_name}/{v}: loss became {loss.item()} at iteration {it}")

    out = time_alternating(steps, args.warmup, args.iters, check)
    out.update(ratios(out, "a2mim", "bare"))
    out["a2mim_img_per_s"] = args.batch / out["a2mim_s"]
    return out


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child_memory(args) -> None:
    """Subprocess body: peak RSS growth (MiB) of building + 2 steps of one variant.

    VmHWM (this address space's RSS high-water mark), not ru_maxrss: Linux carries ru_maxrss over fork+exec,
    so a child of a big parent would report the parent's size.
    """
    base_kb = _proc_status_kb("VmRSS")
    step = build_step(args.child, args.models[0], args, torch.device("cpu"))
    for _ in range(2):
        step()
    print(json.dumps({"peak_mb": (_proc_status_kb("VmHWM") - base_kb) / 1024}))


def memory_cpu(model_name: str, args) -> dict:
    out = {}
    for v in VARIANTS:
        cmd = [sys.executable, "-m", "benchmarks.perf.pretrain_step", "--child", v, "--models", model_name,
               "--precisions", args.precision, "--batch", str(args.batch), "--size", str(args.size),
               "--threads", str(args.threads)] + (["--channels-last"] if args.channels_last else [])
        # glibc: every block >= 64 KiB is its own mmap, returned on free, so RSS follows live tensor bytes
        # (without this, arena reuse made the same run's peak vary by ~30 % between processes)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"memory subprocess {v}/{model_name} failed:\n{res.stderr[-2000:]}")
        out[f"{v}_peak_mb"] = json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]
    out["mem_ratio"] = out["a2mim_peak_mb"] / out["bare_peak_mb"]
    return out


def memory_cuda(model_name: str, args, device) -> dict:
    out = {}
    for v in VARIANTS:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step = build_step(v, model_name, args, device)
        for _ in range(2):
            step()
        out[f"{v}_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        del step
    out["mem_ratio"] = out["a2mim_peak_mb"] / out["bare_peak_mb"]
    return out


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(PRESETS), metavar="PRESET",
                    help=f"backbone presets to compare (default: {' '.join(DEFAULT_MODELS)}; any of pretrain.models "
                         f"PRESETS: {', '.join(sorted(PRESETS))})")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile both variants")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        args.precision = args.precisions[0]
        return child_memory(args)
    device = torch.device(args.device)
    result = {"config": {k: v for k, v in vars(args).items() if k not in ("child", "precision")},
              "host": {"device": str(device), "cpu": platform.processor() or platform.machine(),
                       "threads": args.threads, "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
              "memory_method": "cuda max_memory_allocated" if device.type == "cuda"
              else "VmHWM - VmRSS before build, one subprocess per variant (2 steps), glibc mmap threshold 64 KiB",
              "targets": TARGETS, "results": []}
    for model_name in args.models:
        for prec in args.precisions:
            args.precision = prec
            row = {"model": model_name, "precision": prec, **time_pair(model_name, args, device)}
            if not args.no_memory:
                row.update(memory_cuda(model_name, args, device) if device.type == "cuda"
                           else memory_cpu(model_name, args))
            result["results"].append(row)
            if args.out:       # rewritten after every row: a long run that is stopped keeps what it measured
                atomic_write_json(args.out, result)
            mem = f"  mem {row['a2mim_peak_mb']:.0f}/{row['bare_peak_mb']:.0f} MiB = {row['mem_ratio']:.3f}" \
                if "mem_ratio" in row else ""
            print(f"{model_name:10s} {prec:5s} a2mim {row['a2mim_s']:.3f}s  bare {row['bare_s']:.3f}s  "
                  f"ratio {row['time_ratio']:.3f} (cpu-time ratio {row['cpu_time_ratio']:.3f}; target "
                  f"{TARGETS.get(model_name, '-')}){mem}", flush=True)
    return result


if __name__ == "__main__":
    main()
