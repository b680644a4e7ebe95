"""JPEG decoders, ms per image of decoding in-memory bytes to RGB on one thread (benchmarks/perf/loader.py runs it).

PIL (full, and draft mode = libjpeg DCT scaling to 1/2), torchvision.io.decode_jpeg, OpenCV imdecode (full, and
IMREAD_REDUCED_COLOR_2) where cv2 imports; plus the per-sample decode + transform `tf` for the PIL and the tensor
path.
"""
from __future__ import annotations

import io
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _decoders() -> dict:
    """name -> fn(jpeg bytes) -> RGB image (PIL image, or uint8 array/tensor), fully decoded."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def pil(b):
        with Image.open(io.BytesIO(b)) as im:
            return im.convert("RGB")

    def pil_draft2(b):                       # libjpeg DCT-domain scaling to 1/2 (reduced decoding)
        with Image.open(io.BytesIO(b)) as im:
            im.draft("RGB", (im.width // 2, im.height // 2))
            return im.convert("RGB")

    def tv(b):
        return decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8), mode=ImageReadMode.RGB)

    dec = {"pil": pil, "pil_draft_half": pil_draft2, "torchvision_decode_jpeg": tv}
    try:
        import cv2
    except ImportError:
        return dec
    cv2.setNumThreads(1)
    for name, flag in (("opencv_imdecode", cv2.IMREAD_COLOR), ("opencv_reduced_half", cv2.IMREAD_REDUCED_COLOR_2)):
        dec[name] = (lambda f: lambda b: cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), f),
                                                      cv2.COLOR_BGR2RGB))(flag)
    return dec


def _median_ms(fn, items, repeats: int) -> float:
    """Median over repeats of the mean ms per item (one warm-up call on the first item)."""
    fn(items[0])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        times.append((time.perf_counter() - t0) * 1e3 / len(items))
    return statistics.median(times)


def bench_decoders(paths: list[Path], repeats: int, tf) -> dict:
    """ms/image of each decoder, and of decode + transform on the PIL and the tensor path, one torch thread."""
    data = [p.read_bytes() for p in paths]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # as in a DataLoader worker
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29: io decoders -> TorchCodec
            dec = _decoders()
            ms = {name: _median_ms(fn, data, repeats) for name, fn in dec.items()}
            torch.manual_seed(0)
            pipe = {"pil_decode_transform": _median_ms(lambda b: tf(dec["pil"](b)), data, repeats),
                    "tensor_decode_transform": _median_ms(lambda b: tf(dec["torchvision_decode_jpeg"](b)), data,
                                                          repeats)}
    finally:
        torch.set_num_threads(threads)
    full = {k: v for k, v in ms.items() if "draft" not in k and "reduced" not in k}
    out = {"ms_per_image": ms, "ms_per_sample_decode_transform": pipe,
           "fastest_full_decoder": min(full, key=full.get),
           "speedup_vs_pil": {k: ms["pil"] / v for k, v in ms.items()},
           "tensor_path_speedup": pipe["pil_decode_transform"] / pipe["tensor_decode_transform"],
           "note": "torchvision.io's decoders are deprecated since torchvision 0.29 in favour of TorchCodec "
                   "(data.backend=torchcodec; its numbers are the loader rows)"}
    print("decode ms/image (1 thread): " + "  ".join(f"{k} {v:.2f}" for k, v in ms.items()))
    print(f"decode+transform ms/sample: PIL path {pipe['pil_decode_transform']:.2f}, tensor path "
          f"{pipe['tensor_decode_transform']:.2f} (x{out['tensor_path_speedup']:.2f}); fastest full decoder: "
          f"{out['fastest_full_decoder']}", flush=True)
    return out
