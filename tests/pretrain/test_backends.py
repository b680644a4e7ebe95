"""data.backend: the PIL path's uint8 + on-device normalisation, host-drawn windows, TorchCodec and DALI decoders
(on CPU where the library allows it: TorchCodec's CPU decoder, DALI's CPU-only pipeline), fallbacks, torch.compile."""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader

from imgfactory import make_images
from pretrain import backends
from pretrain.data import DataError, MaskedImageDataset, build_transform, collate, list_images, normalize_batch
from pretrain.gpu_data import (DeviceAugment, EncodedImageDataset, collate_encoded, crop_params, device_decodable,
                               make_backend)
from pretrain.masking import BlockMaskGenerator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MASK = BlockMaskGenerator(64, 32, 16, 0.6)
RRC = dict(scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3))


def _have(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except Exception:
        return False


HAVE_TC, HAVE_DALI = _have("torchcodec.decoders"), _have("nvidia.dali")
needs_tc = pytest.mark.skipif(not HAVE_TC, reason="torchcodec not installed (pip install .[gpu_data])")
needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="nvidia-dali not installed (pip install .[dali])")
DEVICE_BACKENDS = [pytest.param("torchcodec", marks=needs_tc), pytest.param("dali", marks=needs_dali)]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = make_images(tmp_path_factory.mktemp("jpg"), n=12, size=(96, 72), classes=3, layout="imagenet")
    return list_images(root, "imagenet_folder")


def _encoded(paths, **kw):
    return EncodedImageDataset(paths, 64, RRC["scale"], RRC["ratio"], 0.5, "bilinear", MASK, seed=5, **kw)


def _pil(paths):
    return MaskedImageDataset(paths, build_transform(64, RRC["scale"], RRC["ratio"], 0.5, output="uint8"), MASK,
                              seed=5)


def test_uint8_path_normalised_on_device_equals_the_float_transform_bit_for_bit(jpegs):
    old = MaskedImageDataset(jpegs, build_transform(64, RRC["scale"], RRC["ratio"], 0.5), MASK, seed=5)
    new = _pil(jpegs)
    keys = [(i, 3) for i in range(6)]
    a, b = collate([old[k] for k in keys]), collate([new[k] for k in keys])
    assert b[0].dtype == torch.uint8 and b[0].shape == (6, 3, 64, 64)
    x = normalize_batch(b[0].contiguous(memory_format=torch.channels_last))
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, a[0]) and torch.equal(a[1], b[1])
    assert normalize_batch(a[0]) is a[0]                      # already normalised: untouched
    with pytest.raises(TypeError, match="uint8"):
        normalize_batch(torch.zeros(1, 3, 2, 2, dtype=torch.int32))


def test_host_drawn_window_and_flip_are_the_v2_transforms_own():
    from torchvision.transforms import v2
    tf = build_transform(48, (0.2, 1.0), (0.5, 2.0), 0.5, output="uint8")
    rng = np.random.default_rng(0)
    flips = 0
    for seed in range(40):
        h, w = (int(v) for v in rng.integers(30, 200, 2))
        img = torch.arange(3 * h * w, dtype=torch.int64).reshape(3, h, w).to(torch.uint8)   # position-coded
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ref = tf(img).as_subclass(torch.Tensor)
        top, left, ch, cw, flip = crop_params(seed, h, w, tf.transforms[0], 0.5)
        got = v2.functional.resized_crop(img, top, left, ch, cw, [48, 48], antialias=True)
        assert torch.equal(got.flip(-1) if flip else got, ref), seed
        flips += flip
    assert 5 < flips < 35


def test_device_decodable_routes_unusual_files_to_the_pil_path(tmp_path, jpegs):
    data = open(jpegs[0], "rb").read()
    assert device_decodable(data, "a.jpg", None) == (96, 72)
    im = Image.open(jpegs[0])
    cases = {}
    for name, kw in (("cmyk", dict(img=im.convert("CMYK"))), ("png", dict(fmt="PNG"))):
        b = io.BytesIO()
        kw.get("img", im).save(b, kw.get("fmt", "JPEG"))
        cases[name] = b.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6                                           # rotated: nvJPEG/TorchCodec would turn it
    b = io.BytesIO()
    im.save(b, "JPEG", exif=exif.tobytes())
    cases["exif_rotated"] = b.getvalue()
    cases["no_eoi"] = data[:-2]
    for name, blob in cases.items():
        assert device_decodable(blob, name, None) is None, name
    with pytest.raises(DataError, match="big.jpg: 96x72 = 6912 pixels exceeds the decompression-bomb limit 100"):
        device_decodable(data, "big.jpg", 100)
    with pytest.raises(DataError, match="junk.jpg: unreadable image"):
        device_decodable(b"\xff\xd8\xff" + b"\0" * 50, "junk.jpg", None)


def test_pil_path_samples_arrive_ready_with_the_same_window(tmp_path, jpegs):
    png = tmp_path / "x.png"
    Image.open(jpegs[1]).save(png)
    ds = _encoded([str(png), jpegs[1]])
    s_png, m_png, _, key = ds[(0, 2)]
    assert s_png.data is None and s_png.ready.dtype == torch.uint8 and key == (0, 2, 0, 0)
    ref, m_ref, _ = _pil([str(png)])[(0, 2)]
    assert torch.equal(s_png.ready, ref) and torch.equal(m_png, m_ref)
    s_jpg = ds[(1, 2)][0]
    assert s_jpg.data is not None and s_jpg.ready is None and s_jpg.data.dtype == torch.uint8


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_device_backend_on_cpu_matches_pil_windows_masks_and_is_deterministic(jpegs, backend):
    enc, pil = _encoded(jpegs), _pil(jpegs)
    keys = [(i, 1) for i in range(8)]
    batch, mask, skipped = collate_encoded([enc[k] for k in keys])
    ref, ref_mask, _ = collate([pil[k] for k in keys])
    aug = DeviceAugment(make_backend(backend, 64, "bilinear", torch.device("cpu"), 1, 8), enc)
    x, more = aug(batch)
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.uint8 and skipped == more == []
    assert torch.equal(mask, ref_mask)
    diff = (x.float() - ref.float()).abs()
    # same window and flip, another IDCT / resize kernel: TorchCodec + torchvision is within 1-2 levels of PIL,
    # DALI's resampling differs more (still the same picture: a mean well under 1 level)
    assert diff.mean() < (0.1 if backend == "torchcodec" else 1.0) and diff.max() <= (2 if backend == "torchcodec"
                                                                                        else 40)
    again, _ = aug(collate_encoded([enc[k] for k in keys])[0])
    assert torch.equal(again, x)
    # 0 and 2 workers: identical batches (the host draws do not depend on the worker)
    loads = [list(DataLoader(enc, batch_size=4, sampler=keys, num_workers=w, collate_fn=collate_encoded,
                             generator=torch.Generator())) for w in (0, 2)]
    for (b0, m0, _), (b2, m2, _) in zip(*loads):
        assert torch.equal(b0.params, b2.params) and torch.equal(m0, m2)
        assert all(torch.equal(p, q) for p, q in zip(b0.data, b2.data))


class _RefusingBackend:
    """A device decoder that refuses the files whose bytes contain `poison` (as nvJPEG refuses odd JPEGs)."""
    name = "fake"

    def __init__(self, poison: set, inner):
        self.poison, self.inner, self.device = poison, inner, torch.device("cpu")

    def __call__(self, datas, params):
        if any(bytes(d.numpy()[-64:]) in self.poison for d in datas):
            raise RuntimeError("nvjpegDecode failed: bad data")
        return self.inner(datas, params)


@needs_tc
def test_a_file_the_device_refuses_is_decoded_by_pil_or_skipped_and_replaced(tmp_path, jpegs):
    bad = tmp_path / "bad.jpg"                  # header + end marker intact, scan data garbage: PIL refuses it too
    good = open(jpegs[0], "rb").read()
    bad.write_bytes(good[:300] + bytes(range(256)) * 4 + b"\xff\xd9")
    odd = tmp_path / "odd.jpg"                   # a fine JPEG that only the (fake) device decoder refuses
    odd.write_bytes(open(jpegs[2], "rb").read())
    paths = [str(bad), str(odd), *jpegs[3:6]]
    enc = _encoded(paths, skip_budget=10)
    inner = make_backend("torchcodec", 64, "bilinear", torch.device("cpu"))
    poison = {bad.read_bytes()[-64:], odd.read_bytes()[-64:]}
    aug = DeviceAugment(_RefusingBackend(poison, inner), enc)
    keys = [(i, 0) for i in range(5)]
    batch, _, worker_skips = collate_encoded([enc[k] for k in keys])
    assert worker_skips == [] and batch.data[0] is not None          # the worker cannot tell: the header is fine
    with pytest.warns(UserWarning) as rec:
        x, skipped = aug(batch)
    assert len(skipped) == 1 and "bad.jpg" in skipped[0] and "fake decoder" in skipped[0]
    assert any("odd.jpg: the fake decoder refused it" in str(w.message) for w in rec)
    # odd.jpg: PIL's pixels with the sample's own window; bad.jpg: its deterministic replacement
    assert torch.equal(x[1], _pil(paths)[(1, 0)][0])
    with pytest.warns(UserWarning):
        again, skipped2 = DeviceAugment(_RefusingBackend(poison, inner), enc)(collate_encoded(
            [enc[k] for k in keys])[0])
    assert torch.equal(again, x) and skipped2 == skipped
    # a decoder that fails on everything PIL reads is broken, not the data: a clear error, not silent PIL decoding
    broken = DeviceAugment(_RefusingBackend({bytes(open(p, "rb").read()[-64:]) for p in paths}, inner), enc)
    with pytest.raises(RuntimeError, match="failed on every sample"), pytest.warns(UserWarning):
        broken(collate_encoded([enc[k] for k in keys[1:]])[0])


def test_missing_backend_library_names_the_package(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_libs(name, *a, **k):
        if name.startswith(("torchcodec", "nvidia.dali")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_libs)
    with pytest.raises(DataError, match=r"data.backend=torchcodec needs torchcodec \(pip install torchcodec==0.17.0"):
        make_backend("torchcodec", 64, "bilinear", torch.device("cpu"))
    with pytest.raises(DataError, match=r"data.backend=dali needs nvidia-dali-cuda120 \(pip install "
                                        r"nvidia-dali-cuda120==2.4.0"):
        make_backend("dali", 64, "bilinear", torch.device("cpu"))


@pytest.mark.parametrize("backend", ["pil", pytest.param("torchcodec", marks=needs_tc),
                                     pytest.param("dali", marks=needs_dali)])
def test_model_input_gives_normalised_batches_for_every_backend(jpegs, backend):
    from types import SimpleNamespace
    d = SimpleNamespace(backend=backend, rrc_scale=[0.5, 1.0], rrc_ratio=[0.75, 4 / 3], hflip=0.5,
                        interpolation="bilinear", skip_budget=3, max_image_pixels=None, dali_threads=1)
    ds, coll = backends.build_dataset(d, jpegs, 64, MASK, 0)
    aug = backends.build_device_augment(d, ds, torch.device("cpu"), 4)
    img, mask, skipped = backends.model_input(*coll([ds[(i, 0)] for i in range(4)])[:2], torch.device("cpu"), aug,
                                              channels_last=True)
    assert img.dtype == torch.float32 and img.shape == (4, 3, 64, 64) and -2.2 < img.min() and img.max() < 2.7
    assert img.is_contiguous(memory_format=torch.channels_last) and mask.shape == (4, 4, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_device_backend_on_cuda_matches_its_cpu_run_closely(jpegs, backend):
    enc = _encoded(jpegs)
    batch = collate_encoded([enc[(i, 0)] for i in range(8)])[0]
    cpu = DeviceAugment(make_backend(backend, 64, "bilinear", torch.device("cpu"), 1, 8), enc)(batch)[0]
    aug = DeviceAugment(make_backend(backend, 64, "bilinear", torch.device("cuda"), 1, 8), enc)
    gpu = aug(batch)[0]
    assert gpu.is_cuda and gpu.dtype == torch.uint8
    assert (gpu.cpu().float() - cpu.float()).abs().mean() < 2.0
    assert torch.equal(aug(batch)[0], gpu), "the device path must be deterministic (exact resume)"


# ------------------------------------------------------------------------------------------------ torch.compile
def test_compile_switch_auto_is_cuda_only_and_a_failure_falls_back_exactly(caplog):
    from pretrain.compile import CompiledWithFallback, compile_model, want_compile
    assert want_compile(None, torch.device("cuda")) and not want_compile(None, torch.device("cpu"))
    assert want_compile(True, torch.device("cpu")) and not want_compile(False, torch.device("cuda"))
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    assert compile_model(m, None, torch.device("cpu")) is m

    def refusing_backend(gm, example_inputs):
        raise RuntimeError("no C compiler here")

    w = compile_model(m, True, torch.device("cpu"), backend=refusing_backend)
    assert isinstance(w, CompiledWithFallback) and list(w.state_dict()) == ["eager." + k for k in m.state_dict()]
    x = torch.randn(8, 4)
    start = {k: v.clone() for k, v in m.state_dict().items()}
    torch.manual_seed(1)
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        y = w(x)
    after = torch.rand(1)
    assert "torch.compile failed at the first step" in caplog.text and "no C compiler here" in caplog.text
    assert w.compiled is None and "no C compiler here" in w.fallback_reason
    m.load_state_dict(start)
    torch.manual_seed(1)
    assert torch.equal(m(x), y) and torch.equal(torch.rand(1), after)   # exactly the eager step (RNG, BN stats)
    ok = compile_model(m, True, torch.device("cpu"), backend="eager")     # dynamo's tracing, no code generation
    assert ok(x).shape == (8, 4) and ok.compiled is not None and ok._tested


# ------------------------------------------------------------------------------------------------ loader hygiene
def _record_worker(folder):
    """A worker_init_fn that runs the real one, then notes its pid and whether SIGTERM/SIGINT are ignored."""
    import os
    import signal

    from pretrain import signals

    real = signals.ignore_in_worker

    def init(worker_id):
        real(worker_id)
        ignored = all(signal.getsignal(s) == signal.SIG_IGN for s in signals.STOP_SIGNALS)
        (folder / f"{os.getpid()}").write_text(str(ignored))
    return init


def test_one_dataloader_per_run_with_persistent_workers_that_ignore_stop_signals(tmp_path, monkeypatch):
    from imgfactory import CONFIGS

    from pretrain import signals
    from pretrain.config import load_config
    from pretrain.engine import Trainer, run_loop

    marks = tmp_path / "workers"
    marks.mkdir()
    monkeypatch.setattr(signals, "ignore_in_worker", _record_worker(marks))
    built = []

    class Counting(Trainer):
        def build_loader(self):
            loader = super().build_loader()
            built.append(loader)
            return loader

    data = make_images(tmp_path / "imgs", n=8)
    cfg = load_config(CONFIGS / "tiny_r18.yaml", [
        f"data.root={data}", "data.num_workers=1", "data.prefetch_factor=3", "run.batch_per_gpu=4",
        "schedule.epochs=3", "run.image_interval=0", "run.tensorboard=false", "run.export_at_end=false",
        f"run.out_dir={tmp_path / 'run'}"])
    run_loop(Counting(cfg))                                     # 3 epochs of 2 steps
    (loader,) = built
    assert loader.persistent_workers and loader.prefetch_factor == 3 and not loader.pin_memory   # CPU: no pinning
    pids = list(marks.iterdir())
    assert len(pids) == 1, f"one worker for the whole run expected, {len(pids)} were started"
    assert pids[0].read_text() == "True"                        # SIGTERM / SIGUSR1 / SIGINT ignored in the worker


def test_a_run_with_compile_on_that_fails_to_compile_equals_the_eager_run(tmp_path, monkeypatch):
    from imgfactory import CONFIGS

    import pretrain.loop
    from pretrain.checkpoint import load_checkpoint
    from pretrain.compile import compile_model
    from pretrain.config import load_config
    from pretrain.engine import train

    def refusing_backend(gm, example_inputs):
        raise RuntimeError("inductor unavailable")

    data = make_images(tmp_path / "imgs", n=8)
    states = {}
    for setting in ("true", "false"):
        if setting == "true":
            monkeypatch.setattr(pretrain.loop, "compile_model",
                                lambda net, s, dev: compile_model(net, s, dev, backend=refusing_backend))
        train(load_config(CONFIGS / "tiny_r18.yaml", [
            f"data.root={data}", "run.batch_per_gpu=4", "run.max_steps=3", f"run.compile={setting}",
            "run.image_interval=0", "run.tensorboard=false", "run.export_at_end=false",
            f"run.out_dir={tmp_path / setting}"]))
        states[setting] = load_checkpoint(tmp_path / setting / "checkpoints" / "last.pt")["model"]
    for k, v in states["false"].items():
        assert torch.equal(v, states["true"][k]), k


@needs_tc
def test_device_prefetcher_keeps_order_resolves_refusals_on_the_training_thread_and_restarts(tmp_path, jpegs):
    from pretrain.backends import DevicePrefetcher
    bad = tmp_path / "odd.jpg"
    bad.write_bytes(open(jpegs[2], "rb").read())
    paths = [str(bad), *jpegs[3:10]]
    enc = _encoded(paths)
    inner = make_backend("torchcodec", 64, "bilinear", torch.device("cpu"))
    aug = DeviceAugment(_RefusingBackend({bad.read_bytes()[-64:]}, inner), enc)
    keys = [(i, 0) for i in range(8)]
    ref = [DeviceAugment(inner, enc)(collate_encoded([enc[k] for k in keys[i:i + 2]])[0])[0] for i in range(0, 8, 2)]
    loader = DataLoader(enc, batch_size=2, sampler=keys, num_workers=1, collate_fn=collate_encoded,
                        persistent_workers=True, generator=torch.Generator())
    pre = DevicePrefetcher(loader, aug)
    assert len(pre) == 4 and pre.persistent_workers
    it = iter(pre)
    first = next(it)                                          # abandon the pass after one batch ...
    with pytest.warns(UserWarning, match="odd.jpg: the fake decoder refused it"):
        got = list(pre)                                       # ... a new pass starts from the beginning
    assert torch.equal(first[0], got[0][0])
    for (img, mask, skipped), r in zip(got, ref):
        assert img.dtype == torch.uint8 and skipped == [] and torch.equal(img, r)


def test_device_prefetcher_raises_a_workers_error_where_the_batch_is_taken(jpegs):
    from pretrain.backends import DevicePrefetcher

    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise DataError(f"sample {i}: 101 unreadable images in a row")

    aug = DeviceAugment(_RefusingBackend(set(), None), _encoded(jpegs))
    pre = DevicePrefetcher(DataLoader(Failing(), batch_size=2, num_workers=0), aug)
    with pytest.raises(DataError, match="unreadable images in a row"):
        next(iter(pre))
