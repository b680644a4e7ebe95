"""The pre-training data path from the `data` config section: source x backend -> dataset, collate, sampler, and
the batch -> model input step (shared by pretrain/engine.py and benchmarks/perf/loader.py, so the benchmark
measures the trainer's own pipeline).

source  (data.kind): an image list (imagenet_folder | image_folder | file_list: pretrain.data.list_images) or a
        WebDataset shard folder (shards: pretrain.shards.ShardIndex)
backend (data.backend): pil (decode + crop/flip in the workers, uint8 (3,S,S) out) | torchcodec | dali (the workers
        send encoded bytes + the host-drawn window/flip; the device decodes: pretrain.gpu_data)
Every path: uint8 pixels through the workers, normalisation on the training device (model_input), masks drawn in
the workers from the sample's own seed.
"""
from __future__ import annotations

import torch

from pretrain.data import MaskedImageDataset, ResumableDistributedSampler, build_transform, collate, list_images
from pretrain.data import normalize_batch
from pretrain.gpu_data import DeviceAugment, EncodedBatch, EncodedImageDataset, collate_encoded, make_backend


def open_source(d):
    """data section -> list of image paths, or a pretrain.shards.ShardIndex (data.kind=shards)."""
    if d.kind == "shards":
        from pretrain.shards import ShardIndex
        return ShardIndex(d.root)
    return list_images(d.root, d.kind, d.split)


def build_dataset(d, source, size: int, mask_gen, seed: int):
    """-> (dataset keyed by the sampler's (index, epoch), collate_fn)."""
    common = dict(seed=seed, skip_budget=d.skip_budget, max_image_pixels=d.max_image_pixels)
    shards = not isinstance(source, list)
    if d.backend == "pil":
        tf = build_transform(size, d.rrc_scale, d.rrc_ratio, d.hflip, d.interpolation, output="uint8")
        if shards:
            from pretrain.shards import ShardImageDataset
            return ShardImageDataset(source, tf, mask_gen, **common), collate
        return MaskedImageDataset(source, tf, mask_gen, **common), collate
    args = (size, d.rrc_scale, d.rrc_ratio, d.hflip, d.interpolation, mask_gen)
    if shards:
        from pretrain.shards import ShardEncodedDataset
        return ShardEncodedDataset(source, *args, **common), collate_encoded
    return EncodedImageDataset(source, *args, **common), collate_encoded


def build_sampler(source, world_size: int, rank: int, seed: int) -> ResumableDistributedSampler:
    if isinstance(source, list):
        return ResumableDistributedSampler(len(source), world_size, rank, seed=seed)
    from pretrain.shards import ShardSampler
    return ShardSampler(source, world_size, rank, seed=seed)


def build_device_augment(d, dataset, device: torch.device, batch: int) -> DeviceAugment | None:
    """The on-device decode step of data.backend=torchcodec | dali (None for pil). Fails at start-up, naming the
    package to install, when the backend's library is missing."""
    if d.backend == "pil":
        return None
    return DeviceAugment(make_backend(d.backend, dataset.size, d.interpolation, device, d.dali_threads, batch),
                         dataset)


def model_input(img, mask: torch.Tensor, device: torch.device, augment: DeviceAugment | None = None,
                channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A collated batch's pixels -> (normalised float32 (B,3,S,S) on device, mask on device, skipped messages of
    samples replaced on the device side)."""
    skipped: list[str] = []
    if isinstance(img, EncodedBatch):
        if augment is None:
            raise ValueError("an encoded batch needs the device decode step (data.backend=torchcodec | dali)")
        img, skipped = augment(img)
    img = img.to(device, non_blocking=True)
    if channels_last:
        img = img.contiguous(memory_format=torch.channels_last)
    return normalize_batch(img), mask.to(device, non_blocking=True), skipped


class DevicePrefetcher:
    """The run's DataLoader with on-device decoding one step ahead: a thread takes each batch from the DataLoader,
    decodes it on the device (DeviceAugment.fast; on CUDA on a side stream, so the JPEG decode of step s+1 overlaps
    the model's step s) and hands (uint8 (B,3,S,S) on device, mask on device, skipped) to the training thread in
    order. A batch the decoder refuses is handed over undecoded and resolved on the training thread (the fallback
    draws from the global CPU generator, which only the training thread may touch). Deterministic: one producer,
    FIFO, decoding uses no RNG. iter() stops the previous epoch's thread before the DataLoader is iterated anew."""

    def __init__(self, loader, augment: DeviceAugment, depth: int = 2):
        self.loader, self.augment, self.depth, self._active = loader, augment, depth, None

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):            # persistent_workers, prefetch_factor, ... of the DataLoader
        return getattr(self.loader, name)

    def __iter__(self):
        if self._active is not None:
            self._active.close()
        self._active = _PrefetchIter(self.loader, self.augment, self.depth)
        return self._active


_END = object()


class _PrefetchIter:
    def __init__(self, loader, augment: DeviceAugment, depth: int):
        import queue
        import threading
        self.augment, self.dev = augment, augment.backend.device
        self.q, self.stop, self.done = queue.Queue(depth), threading.Event(), False
        self.stream = torch.cuda.Stream(self.dev) if self.dev.type == "cuda" else None
        self.thread = threading.Thread(target=self._run, args=(iter(loader),), daemon=True, name="device-prefetch")
        self.thread.start()

    def _run(self, it) -> None:
        import contextlib
        try:
            for img, mask, skipped in it:
                if self.stop.is_set():
                    return
                with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                    if isinstance(img, EncodedBatch):
                        try:
                            img = self.augment.fast(img)
                        except Exception:
                            pass                  # resolved on the training thread (__next__)
                    mask = mask.to(self.dev, non_blocking=True)
                    event = None
                    if self.stream is not None:
                        event = torch.cuda.Event()
                        event.record(self.stream)
                self._put((img, mask, skipped, event))
            self._put(_END)
        except BaseException as e:  # a DataError from a worker, a broken decoder: raised where the batch is taken
            self._put(e)

    def _put(self, item) -> None:
        import queue
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        item = self.q.get()
        if item is _END:
            self.done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self.done = True
            raise item
        img, mask, skipped, event = item
        if event is not None:
            cur = torch.cuda.current_stream(self.dev)
            cur.wait_event(event)
            for t in (img, mask):
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(cur)
        if isinstance(img, EncodedBatch):          # refused on the prefetch thread: the fallbacks, here
            img, more = self.augment(img)
            skipped = skipped + more
        return img, mask, skipped

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


__all__ = ["DevicePrefetcher", "build_dataset", "build_device_augment", "build_sampler", "model_input",
           "open_source"]
