"""Pre-training data loading, images/s: the project's pipeline vs torchvision's ImageFolder, plus JPEG decoders.

    python -m benchmarks.perf.loader --images 200 --batch 32 --workers 0 2 --repeats 3 --out loader.json \
        [--root DIR (default: a temp dir)] [--size 224] [--threads N] [--pipelines ...]

Per-core numbers (what the issue's ratios are about): --workers 0 --threads 1 runs every pipeline in this one
process on one thread, so images/s is per core; CPU ms/image (all processes) gives the same for --workers N.

Data: `--images` real JPEGs (quality 90, ImageNet-like sizes 333..640 px, smooth shapes + texture, ~50-100 KB)
written to <root>/train/<class>/*.JPEG, so both pipelines read the same files from the same folder.
  ours     : the trainer's data.backend=pil path, built by the trainer's own code (pretrain/backends.py +
             pretrain.loader.build_loader): PIL decode + v2 RandomResizedCrop(224, (0.67,1)) + flip to uint8 in the
             workers, a block mask per sample from its own seeded generator, collate, ResumableDistributedSampler,
             and the consumer's normalisation of the uint8 batch (pretrain.backends.model_input; on the device in a
             GPU run, here on the CPU and timed). Persistent workers off (one pass per loader: their CPU time must be
             joined to be counted).
  torchcodec / dali: the trainer's data.backend=torchcodec / dali paths: workers read the bytes and draw window,
             flip and mask; the consumer decodes + crops + resizes + flips + normalises (TorchCodec's libjpeg-turbo
             + torchvision kernels / a DALI CPU-only pipeline, device_id=None, --threads threads) - on the CPU here,
             the device in a GPU run. Listed when the library imports.
  decode_only: PIL's full decode of the same files, nothing else (the ceiling of any PIL-based CPU loader).
  baseline : torchvision.datasets.ImageFolder (PIL loader) + the same v2 transform, no mask, shuffle, drop_last.
  shm_collate: ours with the proposed collate (default_collate: a worker stacks the batch straight into shared
             memory; pretrain.data.collate's torch.stack makes a private batch that pickling copies once more).
  proposed : shm_collate + JPEGs decoded by torchvision.io.decode_jpeg (libjpeg-turbo, uint8 CHW tensor), the
             same v2 transform applied to the tensor (TensorDecodeDataset below: the proposed change to
             pretrain/data.py, measured here before anyone applies it).
Timing: per repeat and per num_workers, each pipeline runs one full pass (pipelines interleaved, order flipped
every repeat, so load from other processes hits all alike); the first batch (worker start-up, first decode) is
warm-up and excluded: images/s = images after the first batch / time from the first to the last batch. CPU
ms/image (all processes, workers included, whole pass) is the steadier measure on a shared host. Medians over
repeats; ratio = ours / baseline images/s, ratio_cpu = baseline / ours CPU ms per image (>= 1: ours is at
least as fast / as cheap); <p>_ratio(_cpu) the same for pipeline p; <p>_decode_ratio = p / decode_only images/s
(<= 1: the share of the decode-only ceiling reached; ratio_decode for ours); <p>_per_core_img_per_s = 1000 / CPU ms
per image.
Decoders: ms per image of decoding the in-memory JPEG bytes to RGB, one thread: PIL (full, and draft mode =
libjpeg DCT scaling to 1/2), torchvision.io.decode_jpeg, OpenCV imdecode (full, and IMREAD_REDUCED_COLOR_2)
where cv2 imports; plus the per-sample decode + transform for the PIL and the tensor path.
"""
from __future__ import annotations

import argparse
import io
import platform
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, default_collate

from pretrain.data import (DataError, MaskedImageDataset, ResumableDistributedSampler, build_transform, collate,
                           list_images)
from pretrain.fileio import atomic_write_json
from pretrain.masking import BlockMaskGenerator

SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 500), (640, 480))   # (w, h), ImageNet-like
RRC_SCALE, RRC_RATIO = (0.67, 1.0), (3 / 4, 4 / 3)      # the ViT preset's crop (spec §4); CNNs use (0.8, 1)
PIPELINES = ("ours", "baseline", "shm_collate", "proposed", "torchcodec", "dali", "decode_only")
BACKEND_PIPELINES = {"ours": "pil", "torchcodec": "torchcodec", "dali": "dali"}   # pipeline -> data.backend
TARGET = 1.0                                             # ours / baseline images/s (issue #10)


# ------------------------------------------------------------------------------------------------ data
def _synthetic_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Smooth colour field + random shapes + film-grain texture: JPEG sizes/entropy close to photos."""
    low = rng.integers(0, 256, size=(rng.integers(3, 7), rng.integers(3, 7), 3), dtype=np.uint8)
    im = Image.fromarray(low).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(1.0))
    grain = rng.normal(0.0, 10.0, size=(h, w, 3))
    return Image.fromarray(np.clip(np.asarray(im, np.float32) + grain, 0, 255).astype(np.uint8))


def write_jpegs(root: Path, n: int, classes: int = 4, seed: int = 0) -> list[Path]:
    """n JPEGs as root/train/c<k>/img_<i>.JPEG (ImageNet folder layout); existing files are kept."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = SIZES[int(rng.integers(len(SIZES)))]
        p = root / "train" / f"c{i % classes}" / f"img_{i:05d}.JPEG"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            _synthetic_image(rng, w, h).save(p, quality=90)
        paths.append(p)
    return paths


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


# ------------------------------------------------------------------------------------------------ pipelines
class TensorDecodeDataset(MaskedImageDataset):
    """The 'proposed' pipeline (what pretrain/data.py's decode() would become): JPEG files (by their magic bytes)
    are decoded by torchvision.io.decode_jpeg (libjpeg-turbo) to a uint8 (3,H,W) RGB tensor, which the same v2
    transform crops/resizes; the size limit is checked on the header first (PIL reads only the header), a corrupt
    or truncated JPEG raises DataError naming the file (decode_jpeg raises RuntimeError on both). Other formats
    and JPEGs that are not RGB or grey (CMYK, YCCK: pretrain/imageio.py's conversion rules) keep the PIL path."""

    def decode(self, path: str):
        from torchvision.io import ImageReadMode, decode_jpeg
        with open(path, "rb") as f:
            data = f.read()
        if not data.startswith(b"\xff\xd8\xff"):
            return super().decode(path)
        limit = self.max_image_pixels if self.max_image_pixels is not None else Image.MAX_IMAGE_PIXELS
        try:
            with Image.open(io.BytesIO(data)) as im:          # header only
                (w, h), mode = im.size, im.mode
        except Exception as e:
            raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
        if mode not in ("RGB", "L"):                          # CMYK/YCCK etc.: keep PIL's conversion rules
            return super().decode(path)
        if limit is not None and w * h > limit:
            raise DataError(f"{path}: {w}x{h} = {w * h} pixels exceeds the decompression-bomb limit {limit} "
                            f"(data.max_image_pixels); refusing to decode it")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # torchvision 0.29: io decoders -> TorchCodec
            try:
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            except RuntimeError as e:
                raise DataError(f"{path}: unreadable JPEG ({str(e).splitlines()[-1]})") from None


def shared_memory_collate(batch):
    """The proposed pretrain.data.collate: torch's default_collate stacks a worker's batch straight into shared
    memory, so sending it to the main process costs no second copy (torch.stack + pickling copies it into shm)."""
    imgs, masks, skipped = zip(*batch)
    return default_collate(list(imgs)), default_collate(list(masks)), [s for lst in skipped for s in lst]


def _transform(size: int):
    return build_transform(size, RRC_SCALE, RRC_RATIO, 0.5, "bilinear")


def available_pipelines() -> list[str]:
    """PIPELINES whose libraries import here (torchcodec, dali are optional)."""
    from pretrain.gpu_data import missing_library
    return [p for p in PIPELINES if missing_library(p) is None]


def _data_section(backend: str, args, workers: int):
    """The `data` keys the trainer's builders read, as a run with these settings would have them."""
    from types import SimpleNamespace
    return SimpleNamespace(kind="imagenet_folder", split="train", backend=backend, rrc_scale=list(RRC_SCALE),
                           rrc_ratio=list(RRC_RATIO), hflip=0.5, interpolation="bilinear", skip_budget=100,
                           max_image_pixels=None, num_workers=workers, prefetch_factor=2, pin_memory=True,
                           persistent_workers=False, dali_threads=args.threads)


def trainer_loader(root: Path, pipeline: str, args, workers: int):
    """(DataLoader, consume) of the trainer's data.backend path, built by the trainer's own code: pretrain.backends
    + pretrain.loader.build_loader. consume(batch) is the
    step the training process does before the model (decode on the device backends, normalise)."""
    from types import SimpleNamespace

    from pretrain import backends
    from pretrain.loader import build_loader

    d = _data_section(BACKEND_PIPELINES[pipeline], args, workers)
    source = backends.open_source(SimpleNamespace(**vars(d), root=str(root)))
    ds, collate_fn = backends.build_dataset(d, source, args.size, BlockMaskGenerator(args.size, 32, 16, 0.6), 0)
    sampler = backends.build_sampler(source, 1, 0, 0)
    sampler.set_epoch(0, 0)
    cpu = torch.device("cpu")
    augment = backends.build_device_augment(d, ds, cpu, args.batch)
    cfg = SimpleNamespace(data=d, run=SimpleNamespace(batch_per_gpu=args.batch))
    return build_loader(ds, sampler, collate_fn, cfg, cpu), lambda b: backends.model_input(b[0], b[1], cpu, augment)[0]


class DecodeOnlyDataset(torch.utils.data.Dataset):
    """PIL's full decode of each file (pretrain.imageio.decode_rgb), nothing else; yields a 1-element tensor."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from pretrain.imageio import decode_rgb
        decode_rgb(self.paths[i])
        return torch.zeros(1)


def decode_only_loader(root: Path, args, workers: int) -> DataLoader:
    return DataLoader(DecodeOnlyDataset(list_images(root, "imagenet_folder")), batch_size=args.batch, shuffle=True,
                      drop_last=True, num_workers=workers, generator=torch.Generator().manual_seed(0))


def ours_loader(root: Path, pipeline: str, args, workers: int) -> DataLoader:
    """The shm_collate / proposed variants of the PIL path (float normalised in the workers, as the trainer was
    before uint8-through-the-workers), DataLoader as the trainer's but without persistent workers."""
    cls = TensorDecodeDataset if pipeline == "proposed" else MaskedImageDataset
    collate_fn = collate if pipeline == "ours" else shared_memory_collate
    ds = cls(list_images(root, "imagenet_folder"), _transform(args.size),
             BlockMaskGenerator(args.size, 32, 16, 0.6), seed=0)
    sampler = ResumableDistributedSampler(len(ds), 1, 0, seed=0)
    sampler.set_epoch(0, 0)
    return DataLoader(ds, batch_size=args.batch, sampler=sampler, drop_last=True, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=False, generator=torch.Generator(),
                      persistent_workers=False)


def baseline_loader(root: Path, args, workers: int) -> DataLoader:
    from torchvision.datasets import ImageFolder
    ds = ImageFolder(str(root / "train"), transform=_transform(args.size))
    return DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=workers,
                      generator=torch.Generator().manual_seed(0))


def _cpu_s() -> float:
    """User + system CPU seconds of this process and of its finished (joined) children, the loader workers."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _batch_len(batch) -> int:
    x = batch if isinstance(batch, torch.Tensor) else batch[0]
    return x.shape[0] if isinstance(x, torch.Tensor) else len(x.data)    # EncodedBatch: B encoded samples


def time_pass(loader: DataLoader, consume=None) -> dict:
    """One pass. Wall: the first batch is warm-up, images/s counts the batches after it. CPU: everything
    (workers included: a non-persistent loader joins them at the end of the pass), per image. consume(batch): the
    training process's own work on each batch (decode on the device backends, normalisation), timed too."""
    consume = consume or (lambda b: None)
    c0, t0 = _cpu_s(), time.perf_counter()
    it = iter(loader)
    first = next(it)
    consume(first)
    first_n = _batch_len(first)
    t1 = time.perf_counter()
    n = 0
    for batch in it:               # exhausting the iterator shuts the workers down (joined -> RUSAGE_CHILDREN)
        consume(batch)
        n += _batch_len(batch)
    t2 = time.perf_counter()
    if n == 0:
        raise ValueError(f"only one batch per pass ({first_n} images): use more --images or a "
                         f"smaller --batch so that images after the warm-up batch are timed")
    del it
    return {"img_per_s": n / (t2 - t1), "first_batch_s": t1 - t0, "images": n,
            "cpu_ms_per_img": (_cpu_s() - c0) * 1e3 / (n + first_n)}


def bench_loaders(root: Path, args) -> list[dict]:
    rows = []
    for workers in args.workers:
        runs = {p: [] for p in args.pipelines}
        for rep in range(args.repeats):
            order = args.pipelines if rep % 2 == 0 else args.pipelines[::-1]
            for p in order:
                consume = None
                if p == "baseline":
                    loader = baseline_loader(root, args, workers)
                elif p == "decode_only":
                    loader = decode_only_loader(root, args, workers)
                elif p in BACKEND_PIPELINES:
                    loader, consume = trainer_loader(root, p, args, workers)
                else:
                    loader = ours_loader(root, p, args, workers)
                runs[p].append(time_pass(loader, consume))
        row = {"num_workers": workers}
        for p, rs in runs.items():
            row[f"{p}_img_per_s"] = statistics.median(r["img_per_s"] for r in rs)
            row[f"{p}_all_img_per_s"] = [round(r["img_per_s"], 2) for r in rs]
            row[f"{p}_first_batch_s"] = statistics.median(r["first_batch_s"] for r in rs)
            row[f"{p}_cpu_ms_per_img"] = statistics.median(r["cpu_ms_per_img"] for r in rs)
            row[f"{p}_per_core_img_per_s"] = 1e3 / row[f"{p}_cpu_ms_per_img"]
        for p in runs:
            key = "ratio" if p == "ours" else f"{p}_ratio"
            if p != "baseline" and "baseline" in runs:   # >= 1: at least as fast / as CPU-efficient as the baseline
                row[key] = row[f"{p}_img_per_s"] / row["baseline_img_per_s"]
                row[f"{key}_cpu"] = row["baseline_cpu_ms_per_img"] / row[f"{p}_cpu_ms_per_img"]
            if p != "decode_only" and "decode_only" in runs:   # the share of the decode-only ceiling reached
                dkey = "ratio_decode" if p == "ours" else f"{p}_decode_ratio"
                row[dkey] = row[f"{p}_img_per_s"] / row["decode_only_img_per_s"]
                row[f"{dkey}_cpu"] = row["decode_only_cpu_ms_per_img"] / row[f"{p}_cpu_ms_per_img"]
        rows.append(row)
        print(f"workers {workers}: " + "  ".join(f"{p} {row[f'{p}_img_per_s']:.1f} img/s" for p in runs)
              + (f"  ratio ours/baseline {row['ratio']:.3f} (cpu {row['ratio_cpu']:.3f}; target >= {TARGET})"
                 if "ratio" in row else "")
              + "".join(f"  {p}/baseline {row[f'{p}_ratio']:.3f} (cpu {row[f'{p}_ratio_cpu']:.3f})"
                        for p in ("shm_collate", "proposed") if f"{p}_ratio" in row), flush=True)
    print_ratio_table(row)
    return rows


def print_ratio_table(row: dict) -> None:
    """Each trainer backend against torchvision ImageFolder and against PIL decode-only, same run."""
    names = [p for p in ("ours", "torchcodec", "dali") if f"{p}_img_per_s" in row]
    if not names:
        return
    print(f"  {'backend':<12}{'img/s':>9}{'per-core':>10}{'/torchvision':>14}{'(cpu)':>8}{'/decode-only':>14}{'(cpu)':>8}")
    for p in names:
        r = "ratio" if p == "ours" else f"{p}_ratio"
        dr = "ratio_decode" if p == "ours" else f"{p}_decode_ratio"
        label = "pil (ours)" if p == "ours" else p
        fmt = lambda k: f"{row[k]:.3f}" if k in row else "-"   # noqa: E731
        print(f"  {label:<12}{row[f'{p}_img_per_s']:>9.1f}{row[f'{p}_per_core_img_per_s']:>10.1f}{fmt(r):>14}"
              f"{fmt(r + '_cpu'):>8}{fmt(dr):>14}{fmt(dr + '_cpu'):>8}")
    for p in ("baseline", "decode_only"):
        if f"{p}_img_per_s" in row:
            print(f"  {('torchvision' if p == 'baseline' else 'decode-only'):<12}{row[f'{p}_img_per_s']:>9.1f}"
                  f"{row[f'{p}_per_core_img_per_s']:>10.1f}", flush=True)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=None, help="image folder to write/reuse (default: a temporary one)")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pipelines", nargs="+", default=None, choices=PIPELINES,
                    help="default: every pipeline whose library imports here")
    ap.add_argument("--no-decoders", action="store_true", help="skip the per-image decoder comparison")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the main process (default 1, as in a DataLoader worker; with 2+ threads "
                         "and num_workers 0 the small per-image ops ran 5x slower on a shared 2-core host)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    args.pipelines = args.pipelines or available_pipelines()
    if args.images < 2 * args.batch:
        ap.error(f"--images {args.images} < 2 x --batch {args.batch}: nothing left to time after the warm-up batch")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="a2mim_loader_") as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        paths = write_jpegs(root, args.images)
        sizes = [p.stat().st_size for p in paths]
        result = {"config": vars(args),
                  "host": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                           "torch": torch.__version__},
                  "data": {"images": len(paths), "mean_kb": sum(sizes) / len(sizes) / 1024,
                           "sizes_wh": sorted({_size(p) for p in paths})},
                  "target_ratio": TARGET, "loaders": bench_loaders(root, args)}
        if not args.no_decoders:
            from benchmarks.perf.decoders import bench_decoders
            result["decoders"] = bench_decoders(paths, args.repeats, _transform(args.size))
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
