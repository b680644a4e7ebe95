"""One-command GPU check of the pre-training path (for a session that is lent a GPU; under 8 minutes on an H100).

    python -m benchmarks.perf.gpu_check --out gpu_check.json [--skip compile] [--budget-s 420]

Sections (each in its own subprocess with a time limit, so one failure or overrun keeps the others' results;
the JSON is rewritten after every section):
  env      torch / CUDA / GPU / timm versions, bf16 support
  step     A²MIM train step vs the bare backbone's fwd+bwd+AdamW(fused), bf16 autocast + channels_last,
           R50 and ViT-B at 224, batch 128 (benchmarks.perf.pretrain_step on cuda): time and memory ratios
  maxbatch largest power-of-two batch whose A²MIM bf16 + channels_last step fits (R50, ViT-B)
  ddp      1-GPU DistributedDataParallel over NCCL: the DDP step's gradients equal the plain model's on the same
           batch (max abs diff), and DDP step time / plain step time
  engine   the real trainer (python -m pretrain.train) on cuda with bf16 + channels_last on a generated image
           folder: 12 steps, then the same run extended to 16 steps resumes from its checkpoint
  datapath the real trainer's images/s per data.backend (pil, torchcodec, dali) on generated ImageNet-sized JPEGs
           against the model-only A²MIM step images/s, bf16, R50 and ViT-B (benchmarks.perf.datapath; target >= 0.9)
  compile  torch.compile of both step variants (R50, bf16, channels_last): compiled vs eager time ratio
Targets (issue #10): A²MIM/bare time <= 1.10 (R50), <= 1.05 (ViT-B); memory <= 1.15.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SECTIONS = ("env", "datapath", "step", "maxbatch", "ddp", "engine", "compile")


# ---- sections run in a child process: each returns a JSON-able dict
def sec_env(_args) -> dict:
    import timm
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "timm": timm.__version__,
            "gpu": torch.cuda.get_device_name(), "bf16": torch.cuda.is_bf16_supported(),
            "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2 ** 30,
            "nccl": ".".join(map(str, torch.cuda.nccl.version()))}


def _step_cli(args, extra: list[str], name: str) -> dict:
    out = Path(args.workdir) / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.perf.pretrain_step", "--device", "cuda", "--precisions", "bf16",
           "--channels-last", "--size", "224", "--out", str(out), *extra]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def sec_step(args) -> dict:
    return _step_cli(args, ["--models", "resnet50", "vit_base", "--batch", str(args.batch), "--iters", "20",
                            "--warmup", "5"], "step")


def sec_datapath(args) -> dict:
    out = Path(args.workdir) / "datapath.json"
    subprocess.run([sys.executable, "-m", "benchmarks.perf.datapath", "--device", "cuda", "--batch", str(args.batch),
                    "--workers", str(max(1, (os.cpu_count() or 2) - 2)), "--workdir", str(Path(args.workdir) / "dp"),
                    "--out", str(out)], check=True)
    return json.loads(out.read_text())


def sec_compile(args) -> dict:
    eager = _step_cli(args, ["--models", "resnet50", "--batch", str(args.batch), "--iters", "10", "--warmup", "3",
                             "--no-memory"], "compile_eager")
    comp = _step_cli(args, ["--models", "resnet50", "--batch", str(args.batch), "--iters", "10", "--warmup", "3",
                            "--no-memory", "--compile"], "compile")
    e, c = eager["results"][0], comp["results"][0]
    return {"eager": e, "compiled": c, "compiled_over_eager_a2mim": c["a2mim_s"] / e["a2mim_s"],
            "compiled_over_eager_bare": c["bare_s"] / e["bare_s"]}


def _a2mim_step(model_name: str, batch: int):
    """-> step() of A²MIM, bf16 autocast, channels_last, fused AdamW, on a random batch of `batch` images."""
    from pretrain.a2mim import A2MIM
    from pretrain.models.presets import get_preset

    dev = torch.device("cuda")
    model = A2MIM(get_preset(model_name), input_size=224).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4, fused=True)
    img = torch.randn(batch, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    g = model.mask_generator()
    import numpy as np
    rng = np.random.default_rng(0)
    mask = torch.stack([g(rng) for _ in range(batch)]).to(dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = model(img, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        return loss.item()
    return model, step


def sec_maxbatch(args) -> dict:
    out = {}
    for name in ("resnet50", "vit_base"):
        fits, peak = 0, {}
        b = 256
        while b <= 4096:
            try:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                model, step = _a2mim_step(name, b)
                step()
                step()
                fits, peak[b] = b, torch.cuda.max_memory_allocated() / 2 ** 30
                del model, step
            except torch.OutOfMemoryError:
                break
            b *= 2
        out[name] = {"max_pow2_batch": fits, "peak_gib": peak}
    return out


def sec_ddp(args) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model, _ = _a2mim_step("resnet50", 1)
        plain, _ = _a2mim_step("resnet50", 1)
        plain.load_state_dict(model.state_dict())
        ddp = DDP(model, device_ids=[0])
        b = args.batch // 2
        img = torch.randn(b, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
        import numpy as np
        g, rng = model.mask_generator(), np.random.default_rng(1)
        mask = torch.stack([g(rng) for _ in range(b)]).cuda()

        def fwd_bwd(net):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss, _ = net(img, mask)
            loss.backward()
            torch.cuda.synchronize()
            return loss.item()

        l_ddp, l_plain = fwd_bwd(ddp), fwd_bwd(plain)
        diffs = [(p1.grad - p2.grad).abs().max().item() for p1, p2 in zip(model.parameters(), plain.parameters())
                 if p1.grad is not None]
        times = {}
        for name, net in (("ddp", ddp), ("plain", plain)):
            for _ in range(3):
                fwd_bwd(net)
            t0 = time.perf_counter()
            for _ in range(10):
                fwd_bwd(net)
            times[name] = (time.perf_counter() - t0) / 10
        return {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "batch": b,
                "loss_ddp": l_ddp, "loss_plain": l_plain, "max_abs_grad_diff": max(diffs),
                "ddp_s": times["ddp"], "plain_s": times["plain"], "ddp_over_plain": times["ddp"] / times["plain"]}
    finally:
        dist.destroy_process_group()


def _write_images(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:256, 0:320]
    for i in range(n):
        f = rng.uniform(0.01, 0.1, 3)
        arr = np.stack([127 + 100 * np.sin(f[c] * (xx + yy * (c + 1)) + i) for c in range(3)], -1)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / f"img_{i:04d}.jpg", quality=90)


def sec_engine(args) -> dict:
    wd = Path(args.workdir)
    data, run = wd / "engine_images", wd / "engine_run"
    _write_images(data, 512)
    base = [sys.executable, "-m", "pretrain.train", "--config", "pretrain/configs/a2mim_r50_ep100.yaml",
            f"data.root={data}", "data.kind=image_folder", "data.num_workers=8", f"run.out_dir={run}",
            "run.device=cuda", "run.precision=bf16", "run.channels_last=true", "run.batch_per_gpu=64",
            "run.log_interval=4", "run.ckpt_interval=6", "run.image_interval=0", "run.syncbn=false"]
    t0 = time.perf_counter()
    subprocess.run(base + ["run.max_steps=12"], check=True)
    t1 = time.perf_counter()
    subprocess.run(base + ["run.max_steps=16"], check=True)
    t2 = time.perf_counter()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    info = json.loads((run / "run_info.json").read_text())
    return {"first_s": t1 - t0, "resume_s": t2 - t1, "resumed_from": info.get("resumed_from"),
            "start_step": info.get("start_step"), "last": rows[-1] if rows else None,
            "images_per_s": [r.get("images_per_s") for r in rows]}


# ---- driver
def run_section(name: str, args, remaining: float) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        res_path = f.name
    cmd = [sys.executable, "-m", "benchmarks.perf.gpu_check", "--child", name, "--child-out", res_path,
           "--workdir", args.workdir, "--batch", str(args.batch)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, timeout=max(remaining, 10))
        ok = p.returncode == 0
        body = json.loads(Path(res_path).read_text()) if ok else {"error": f"exit code {p.returncode}"}
    except subprocess.TimeoutExpired:
        body = {"error": f"timed out after {remaining:.0f} s"}
    finally:
        Path(res_path).unlink(missing_ok=True)
    body["seconds"] = round(time.perf_counter() - t0, 1)
    return body


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    ap.add_argument("--budget-s", type=float, default=450, help="stop starting sections past this")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", choices=SECTIONS, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        res = globals()[f"sec_{args.child}"](args)
        Path(args.child_out).write_text(json.dumps(res, indent=1, default=str))
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here", file=sys.stderr)
        return 2
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="gpu_check_")
    from pretrain.fileio import atomic_write_json
    t0, result = time.perf_counter(), {}
    for name in SECTIONS:
        if name in args.skip:
            continue
        remaining = args.budget_s - (time.perf_counter() - t0)
        if remaining < 20:
            result[name] = {"error": "skipped: time budget spent"}
            continue
        print(f"== gpu_check: {name} ({remaining:.0f} s left)", flush=True)
        result[name] = run_section(name, args, remaining)
        atomic_write_json(args.out, result)
        print(json.dumps(result[name], default=str)[:1500], flush=True)
    return 0 if all("error" not in v for v in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
