"""On-device decoding for pre-training (data.backend = torchcodec | dali): the host draws, the device decodes.

Split of the work (what makes resume exact on these paths too):
  workers (EncodedImageDataset): read the encoded bytes, parse the JPEG header only (size, mode, EXIF orientation,
      bomb guard), draw the sample's RandomResizedCrop window and flip from its own seed (crop_params: the very
      draws of torchvision v2's RandomResizedCrop + RandomHorizontalFlip, so the window equals the PIL path's) and
      its mask from the mask generator (pretrain.data.sample_seeds) - exactly as the PIL path does.
  device (DeviceAugment, in the training process): decode + crop + resize (antialiased) + flip of the whole batch,
      uint8 (B,3,S,S) out; the engine normalises it on the device (pretrain.data.normalize_batch).
So on these paths "exact" = same samples, same order, same windows, same flips, same masks as an uninterrupted run,
and pixels bit-identical to an uninterrupted run on the same backend and device (not to PIL: another JPEG IDCT and
another resize kernel).
Samples the device decoders must not see take the PIL path in the worker, with the same window and flip, and arrive
ready as uint8 (3,S,S): non-JPEG files, JPEGs that are not RGB/grey (CMYK, YCCK: pretrain.imageio's conversions),
JPEGs with an EXIF orientation (nvJPEG/TorchCodec would rotate them; PIL does not) or without an end-of-image
marker (possibly truncated: PIL decides). A JPEG the device decoder still refuses is decoded by PIL in the training
process; if PIL refuses it too it is a counted skip, replaced by the sample's own deterministic replacement chain
(MaskedImageDataset.sample with `rejected`).
Batch: (EncodedBatch, mask (B,h,w) uint8, skipped messages). EncodedBatch.data[i] is the 1-D uint8 tensor of the
file's bytes or None (then ready[i] holds the host-made pixels); params (B,5) int64 = top, left, height, width, flip;
keys (B,4) int64 = index, epoch, source index actually decoded, skips already reported for the sample.
"""
from __future__ import annotations

import io
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import torch

from pretrain.data import MaskedImageDataset, build_transform
from pretrain.imageio import DataError, _open, decode_rgb, pixel_limit

BACKENDS = ("torchcodec", "dali")
INSTALL = {"torchcodec": "torchcodec (pip install torchcodec==0.17.0, or pip install .[gpu_data])",
           "dali": "nvidia-dali-cuda120 (pip install nvidia-dali-cuda120==2.4.0, or pip install .[dali])"}
EXIF_ORIENTATION = 0x0112
_MODULE = {"torchcodec": "torchcodec.decoders", "dali": "nvidia.dali"}


def missing_library(backend: str) -> str | None:
    """None when data.backend=`backend` can load its library here (pil always can), else why not."""
    if backend not in _MODULE:
        return None
    try:
        __import__(_MODULE[backend])
    except Exception as e:   # an optional extra that is missing or does not load here
        return f"{type(e).__name__}: {e}"
    return None


class NamedBytes(io.BytesIO):
    """In-memory file that prints as its source's name (pretrain.imageio's messages name the file)."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label

    __repr__ = __str__


def device_decodable(data: bytes, name: str, max_pixels: int | None) -> tuple[int, int] | None:
    """(width, height) of a JPEG the device decoders may take; None: take the PIL path; DataError: unreadable
    header or over the decompression-bomb limit (the PIL path's messages)."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    with _open(NamedBytes(data, name), pixel_limit(max_pixels)) as im:
        if im.format != "JPEG" or im.mode not in ("RGB", "L"):
            return None
        if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
            return None
        size = im.size
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    return size


def crop_params(aug_seed: int, height: int, width: int, rrc, hflip: float) -> tuple[int, int, int, int, int]:
    """(top, left, h, w, flip) drawn as build_transform's RandomResizedCrop + RandomHorizontalFlip draw them from
    the generator seeded with aug_seed (the window of the PIL path for the same image size)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(aug_seed)
        p = rrc.make_params([torch.empty(1, 1, 1, dtype=torch.uint8).expand(1, height, width)])
        flip = not bool(torch.rand(1) >= hflip)          # v2 RandomHorizontalFlip: `if rand(1) >= p: no flip`
    return int(p["top"]), int(p["left"]), int(p["height"]), int(p["width"]), int(flip)


class _Encoded(NamedTuple):
    data: bytes
    width: int
    height: int
    j: int


class EncodedSample(NamedTuple):
    data: torch.Tensor | None      # (n,) uint8 file bytes, or None when `ready` holds the pixels
    ready: torch.Tensor | None     # (3,S,S) uint8 made on the host (PIL path), or None
    params: tuple                  # top, left, height, width, flip
    name: str
    j: int                         # source index actually decoded (after replacements)


class EncodedBatch(NamedTuple):
    data: list                     # B x ((n,) uint8 | None)
    ready: list                    # B x ((3,S,S) uint8 | None)
    params: torch.Tensor           # (B, 5) int64
    keys: torch.Tensor             # (B, 4) int64: index, epoch, j, skips reported
    names: list


class EncodedImageDataset(MaskedImageDataset):
    """dataset[(index, epoch)] -> (EncodedSample, mask, skipped, key); the source hooks (name / read_bytes / replacement,
    __len__) are MaskedImageDataset's, so shards plug in the same way (pretrain.shards)."""

    def __init__(self, paths: Sequence[str], size: int, scale, ratio, hflip: float, interpolation: str, mask_gen,
                 seed: int = 0, skip_budget: int = 100, max_image_pixels: int | None = None):
        super().__init__(paths, build_transform(size, scale, ratio, hflip, interpolation, output="uint8"), mask_gen,
                         seed=seed, skip_budget=skip_budget, max_image_pixels=max_image_pixels)
        self.size, self.hflip, self.interpolation = size, hflip, interpolation
        self.rrc = self.transform.transforms[0]          # the PIL path's RandomResizedCrop (same parameters)

    def load(self, j: int):
        data, name = self.read_bytes(j), self.name(j)
        size = device_decodable(data, name, self.max_image_pixels)
        if size is None:                                 # the PIL path, in this worker
            return decode_rgb(NamedBytes(data, name), self.max_image_pixels), j
        return _Encoded(data, size[0], size[1], j)

    def augment(self, item, aug_seed: int) -> EncodedSample:
        if isinstance(item, _Encoded):
            params = crop_params(aug_seed, item.height, item.width, self.rrc, self.hflip)
            return EncodedSample(torch.frombuffer(bytearray(item.data), dtype=torch.uint8), None, params,
                                 self.name(item.j), item.j)
        img, j = item
        params = crop_params(aug_seed, img.height, img.width, self.rrc, self.hflip)
        return EncodedSample(None, super().augment(img, aug_seed), params, self.name(j), j)

    def __getitem__(self, key):
        """-> (EncodedSample, mask, skipped, (index, epoch, j, skips)): the key part feeds the device-side fallback."""
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        sample, mask, skipped = self.sample(index, epoch)
        return sample, mask, skipped, (index, epoch, sample.j, len(skipped))


def collate_encoded(batch):
    """-> (EncodedBatch, mask (B,h,w) uint8, skipped messages)."""
    samples, masks, skipped, keys = zip(*batch)
    return (EncodedBatch([s.data for s in samples], [s.ready for s in samples],
                         torch.tensor([s.params for s in samples], dtype=torch.int64),
                         torch.tensor(keys, dtype=torch.int64), [s.name for s in samples]),
            torch.stack(masks), [m for lst in skipped for m in lst])


# ------------------------------------------------------------------------------------------------ device side
class TorchCodecBackend:
    """nvJPEG batch decode (torchcodec.decoders.decode_jpeg, device=cuda; libjpeg-turbo on CPU) + per-sample
    crop / antialiased resize / flip with torchvision's v2 kernels on the decoded tensors."""
    name = "torchcodec"

    def __init__(self, size: int, interpolation: str, device: torch.device, threads: int = 1):
        try:
            from torchcodec.decoders import decode_jpeg
        except Exception as e:
            raise DataError(f"data.backend=torchcodec needs {INSTALL['torchcodec']} ({type(e).__name__}: {e})") from None
        from torchvision.transforms import InterpolationMode
        self._decode, self.size, self.device = decode_jpeg, size, device
        self.interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[interpolation]

    def __call__(self, datas: list, params: torch.Tensor) -> torch.Tensor:
        """datas: n x (bytes,) uint8 CPU tensors; params (n,5) -> uint8 (n,3,S,S) on the device."""
        from torchvision.transforms.v2 import functional as F

        imgs = self._decode(list(datas), mode="RGB", device=self.device)
        out = []
        for img, (top, left, h, w, flip) in zip(imgs, params.tolist()):
            x = F.resized_crop(img, top, left, h, w, [self.size, self.size], interpolation=self.interp,
                               antialias=True)
            out.append(x.flip(-1) if flip else x)
        return torch.stack(out)


class DaliBackend:
    """One NVIDIA DALI pipeline: decoders.image_slice (the host's window; mixed = nvJPEG + the hardware JPEG
    decoder on CUDA, a CPU-only pipeline with device_id=None on CPU) -> resize (antialiased) -> crop_mirror_normalize
    (flip, CHW, uint8). Fed per batch (external_source), run synchronously; rebuilt after an error (DALI leaves a
    pipeline that raised unusable)."""
    name = "dali"

    def __init__(self, size: int, interpolation: str, device: torch.device, threads: int = 4,
                 max_batch: int = 256):
        why = missing_library("dali")
        if why:
            raise DataError(f"data.backend=dali needs {INSTALL['dali']} ({why})")
        self.size, self.device, self.threads, self.max_batch = size, device, threads, max_batch
        self.interpolation, self.pipe = interpolation, None

    def _build(self):
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def

        cuda = self.device.type == "cuda"
        interp = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}[self.interpolation]

        @pipeline_def(batch_size=self.max_batch, num_threads=self.threads,
                      device_id=(self.device.index or 0) if cuda else None,
                      prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def pipe():
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            anchor = fn.external_source(name="anchor", dtype=types.FLOAT, ndim=1)
            shape = fn.external_source(name="shape", dtype=types.FLOAT, ndim=1)
            flip = fn.external_source(name="flip", dtype=types.INT32, ndim=0)
            img = fn.decoders.image_slice(jpegs, anchor, shape, device="mixed" if cuda else "cpu",
                                          output_type=types.RGB, axis_names="WH", normalized_anchor=False,
                                          normalized_shape=False, adjust_orientation=False)
            img = fn.resize(img, resize_x=self.size, resize_y=self.size, interp_type=interp, antialias=True)
            return fn.crop_mirror_normalize(img, mirror=flip, dtype=types.UINT8, output_layout="CHW")

        p = pipe()
        p.build()
        return p

    def __call__(self, datas: list, params: torch.Tensor) -> torch.Tensor:
        if len(datas) > self.max_batch:
            return torch.cat([self(datas[i:i + self.max_batch], params[i:i + self.max_batch])
                              for i in range(0, len(datas), self.max_batch)])
        if self.pipe is None:
            self.pipe = self._build()
        prm = params.numpy()
        try:
            self.pipe.feed_input("jpegs", [d.numpy() for d in datas])
            self.pipe.feed_input("anchor", [np.array([p[1], p[0]], np.float32) for p in prm])   # (x, y)
            self.pipe.feed_input("shape", [np.array([p[3], p[2]], np.float32) for p in prm])    # (w, h)
            self.pipe.feed_input("flip", [np.array(p[4], np.int32) for p in prm])
            (out,) = self.pipe.run()
        except Exception:
            self.pipe = None
            raise
        if self.device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray
            dense = out.as_tensor()
            x = torch.empty(dense.shape(), dtype=torch.uint8, device=self.device)
            feed_ndarray(dense, x, cuda_stream=torch.cuda.current_stream(self.device))
            return x
        return torch.from_numpy(out.as_array())


def make_backend(name: str, size: int, interpolation: str, device: torch.device, threads: int = 4,
                 max_batch: int = 256):
    if name == "torchcodec":
        return TorchCodecBackend(size, interpolation, device)
    if name == "dali":
        return DaliBackend(size, interpolation, device, threads, max_batch)
    raise ValueError(f"data.backend={name!r}: the device backends are {BACKENDS}")


class DeviceAugment:
    """EncodedBatch -> (uint8 (B,3,S,S) on the device, skipped messages of samples replaced here)."""

    def __init__(self, backend, dataset: EncodedImageDataset):
        self.backend, self.dataset = backend, dataset

    def fast(self, batch: EncodedBatch) -> torch.Tensor:
        """The whole batch on the device, no fallback (raises if the decoder refuses any sample). Touches no RNG,
        so it may run on a prefetch thread (pretrain.backends.DevicePrefetcher)."""
        out, enc = self._ready(batch)
        if enc:
            out[enc] = self.backend([batch.data[i] for i in enc], batch.params[enc])
        return out

    def _ready(self, batch: EncodedBatch) -> tuple[torch.Tensor, list[int]]:
        """(uint8 (B,3,S,S) on the device holding the host-made samples, indices of the encoded ones to decode)."""
        S = self.dataset.size
        out = torch.empty(len(batch.data), 3, S, S, dtype=torch.uint8, device=self.backend.device)
        for i, r in enumerate(batch.ready):
            if r is not None:
                out[i] = r.to(out.device, non_blocking=True)
        return out, [i for i, d in enumerate(batch.data) if d is not None]

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, list[str]]:
        """The batch on the device with the fallbacks (module docstring); the fallback re-draws replacement samples
        with the global CPU generator forked (MaskedImageDataset.augment): call it on the training thread."""
        dev = self.backend.device
        out, enc = self._ready(batch)
        skipped: list[str] = []
        if enc:
            try:
                out[enc] = self.backend([batch.data[i] for i in enc], batch.params[enc])
            except Exception as e:   # find the sample(s) the decoder refuses; decode the others alone
                self.refused = 0
                for i in enc:
                    out[i] = self._one(batch, i, skipped)
                if len(enc) > 1 and self.refused == len(enc):   # not the data: the decoder itself is broken
                    raise RuntimeError(f"the {self.backend.name} decoder failed on every sample of a batch that PIL "
                                       f"decodes (data.backend={self.backend.name} on {dev}): "
                                       f"{type(e).__name__}: {e}") from e
        return out, skipped

    def _host(self, data: torch.Tensor, params, name: str) -> torch.Tensor:
        """The PIL path on a sample the device refused (same window and flip); DataError if PIL refuses it too."""
        from torchvision.transforms.v2 import functional as F
        top, left, h, w, flip = (int(v) for v in params)
        img = decode_rgb(NamedBytes(data.numpy().tobytes(), name), self.dataset.max_image_pixels)
        rrc = self.dataset.rrc
        x = F.pil_to_tensor(F.resized_crop(img, top, left, h, w, [self.dataset.size] * 2,
                                           interpolation=rrc.interpolation, antialias=True))
        return x.flip(-1) if flip else x

    def _one(self, batch: EncodedBatch, i: int, skipped: list[str]) -> torch.Tensor:
        data, params, name = batch.data[i], batch.params[i], batch.names[i]
        index, epoch, j, reported = (int(v) for v in batch.keys[i])
        rejected: dict[int, str] = {}
        while True:
            try:
                return self.backend([data], params[None])[0]
            except Exception as e:
                why = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
                self.refused += 1
            try:
                x = self._host(data, params, name)
                warnings.warn(f"{name}: the {self.backend.name} decoder refused it ({why}); decoded by PIL",
                              stacklevel=2)
                return x.to(self.backend.device)
            except DataError as e:
                rejected[j] = f"{e} (and the {self.backend.name} decoder: {why})"
            sample, _, sk = self.dataset.sample(index, epoch, rejected)   # the same replacement chain, continued
            skipped += sk[reported:]
            reported = len(sk)
            if sample.data is None:
                return sample.ready.to(self.backend.device)
            data, params, name, j = sample.data, torch.tensor(sample.params), sample.name, sample.j


__all__ = ["BACKENDS", "DaliBackend", "DeviceAugment", "EncodedBatch", "EncodedImageDataset",
           "TorchCodecBackend", "collate_encoded", "crop_params", "device_decodable", "make_backend"]
