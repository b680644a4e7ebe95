"""The data-loading benchmark: real JPEGs, the three pipelines, the decoder table, its JSON."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.perf import loader
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD, MaskedImageDataset, build_transform
from pretrain.masking import BlockMaskGenerator


def test_write_jpegs_makes_imagenet_layout_real_jpegs(tmp_path):
    paths = loader.write_jpegs(tmp_path, 6, classes=3)
    assert [p.relative_to(tmp_path).as_posix() for p in paths[:4]] == [
        "train/c0/img_00000.JPEG", "train/c1/img_00001.JPEG", "train/c2/img_00002.JPEG", "train/c0/img_00003.JPEG"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size in loader.SIZES
        assert 10_000 < p.stat().st_size < 400_000          # photo-like, not flat colour or pure noise
    mtime = paths[0].stat().st_mtime_ns
    assert loader.write_jpegs(tmp_path, 6, classes=3) == paths and paths[0].stat().st_mtime_ns == mtime  # reused


def test_tensor_decode_dataset_matches_the_pil_pipeline_in_shape_mask_and_content(tmp_path):
    paths = [str(p) for p in loader.write_jpegs(tmp_path, 2)]
    # a PNG takes the PIL fallback of the proposed decoder
    png = tmp_path / "x.png"
    Image.new("RGB", (96, 80), (255, 0, 0)).save(png)
    paths.append(str(png))
    tf = build_transform(64, (1.0, 1.0), (1.0, 1.0), 0.0)        # deterministic: full-image resize, no flip
    gen = BlockMaskGenerator(64, 32, 16, 0.5)
    ours = MaskedImageDataset(paths, tf, gen, seed=3)
    prop = loader.TensorDecodeDataset(paths, tf, gen, seed=3)
    for i in range(3):
        (xa, ma, sa), (xb, mb, sb) = ours[(i, 0)], prop[(i, 0)]
        assert xa.shape == xb.shape == (3, 64, 64) and xb.dtype == torch.float32
        assert torch.equal(ma, mb) and sa == sb == []
        # same image, two resize implementations (PIL vs torch uint8 antialias): close in normalised units
        assert (xa - xb).abs().mean() < 0.05
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(prop[(2, 0)][0][:, 10, 10], red, atol=0.02)      # the PNG: pure red after normalise


def test_loader_benchmark_end_to_end_json(tmp_path):
    out = tmp_path / "loader.json"
    res = loader.main(["--root", str(tmp_path / "imgs"), "--images", "12", "--batch", "4", "--workers", "0",
                       "--repeats", "1", "--size", "64", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert res["data"]["images"] == 12 and len(list((tmp_path / "imgs" / "train").glob("*/*.JPEG"))) == 12
    (row,) = res["loaders"]
    assert row["num_workers"] == 0
    for p in loader.PIPELINES:
        assert row[f"{p}_img_per_s"] > 0 and len(row[f"{p}_all_img_per_s"]) == 1
    assert row["ratio"] == pytest.approx(row["ours_img_per_s"] / row["baseline_img_per_s"])
    assert row["proposed_ratio"] == pytest.approx(row["proposed_img_per_s"] / row["baseline_img_per_s"])
    assert row["shm_collate_ratio_cpu"] == pytest.approx(
        row["baseline_cpu_ms_per_img"] / row["shm_collate_cpu_ms_per_img"])
    assert row["ratio_cpu"] == pytest.approx(row["baseline_cpu_ms_per_img"] / row["ours_cpu_ms_per_img"])
    assert 0 < row["ours_cpu_ms_per_img"] < 10_000
    dec = res["decoders"]
    assert {"pil", "pil_draft_half", "torchvision_decode_jpeg"} <= set(dec["ms_per_image"])
    assert dec["speedup_vs_pil"]["pil"] == 1.0
    assert dec["fastest_full_decoder"] in dec["ms_per_image"] and "draft" not in dec["fastest_full_decoder"]
    assert set(dec["ms_per_sample_decode_transform"]) == {"pil_decode_transform", "tensor_decode_transform"}


def test_loader_benchmark_with_two_workers(tmp_path):
    res = loader.main(["--root", str(tmp_path), "--images", "8", "--batch", "2", "--workers", "2", "--repeats", "1",
                       "--size", "32", "--pipelines", "ours", "baseline", "--no-decoders"])
    (row,) = res["loaders"]
    assert row["num_workers"] == 2 and row["ours_img_per_s"] > 0 and row["baseline_img_per_s"] > 0
    assert "proposed_img_per_s" not in row and "decoders" not in res
    assert row["ours_cpu_ms_per_img"] > 0 and row["ratio_cpu"] > 0


def test_loader_benchmark_refuses_too_few_images(tmp_path, capsys):
    with pytest.raises(SystemExit):
        loader.main(["--root", str(tmp_path), "--images", "6", "--batch", "4"])
    assert "nothing left to time after the warm-up batch" in capsys.readouterr().err


class _BusyDataset(torch.utils.data.Dataset):
    """Each item burns 0.1 s of CPU in whichever process loads it."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        import time
        t = time.process_time()
        while time.process_time() - t < 0.1:
            pass
        return torch.zeros(1)


def test_time_pass_counts_the_workers_cpu_time():
    # 4 items x 0.1 s, all in 2 worker processes: the main process only waits, yet >= ~0.1 s/item is reported
    res = loader.time_pass(torch.utils.data.DataLoader(_BusyDataset(), batch_size=1, num_workers=2))
    assert res["images"] == 3 and res["cpu_ms_per_img"] > 90


def test_proposed_decode_reports_truncated_and_oversized_jpegs(tmp_path):
    good = loader.write_jpegs(tmp_path, 1)[0]
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:5000])
    ds = loader.TensorDecodeDataset([str(good), str(cut)], build_transform(32, (1, 1), (1, 1), 0.0),
                                    BlockMaskGenerator(32, 32, 16, 0.5), seed=0)
    with pytest.raises(loader.DataError, match=r"cut\.jpg: unreadable JPEG"):
        ds.decode(str(cut))
    with pytest.warns(UserWarning, match="skipping image"):
        x, _, skipped = ds[(1, 0)]              # replaced (drawn until the good image comes), skips reported
    assert x.shape == (3, 32, 32) and len(skipped) >= 1 and all("cut.jpg: unreadable JPEG" in m for m in skipped)
    small = loader.TensorDecodeDataset([str(good)], ds.transform, ds.mask_gen, max_image_pixels=1000)
    with pytest.raises(loader.DataError, match=r"pixels exceeds the decompression-bomb limit 1000"):
        small.decode(str(good))


def test_shared_memory_collate_equals_the_projects_collate():
    from pretrain.data import collate
    batch = [(torch.full((3, 4, 4), float(i)), torch.full((2, 2), i, dtype=torch.uint8), [f"s{i}"] * i)
             for i in range(3)]
    ref, got = collate(batch), loader.shared_memory_collate(batch)
    assert torch.equal(got[0], ref[0]) and got[0].shape == (3, 3, 4, 4)
    assert torch.equal(got[1], ref[1]) and got[1].dtype == torch.uint8
    assert got[2] == ref[2] == ["s1", "s2", "s2"]


def test_proposed_decode_uses_libjpeg_for_rgb_and_grey_and_pil_for_cmyk(tmp_path):
    rgb = loader.write_jpegs(tmp_path, 1)[0]
    with Image.open(rgb) as im:
        im.convert("L").save(tmp_path / "grey.jpg")
        im.convert("CMYK").save(tmp_path / "cmyk.jpg")
    with Image.open(tmp_path / "grey.jpg") as im:                  # PIL's decode of the same file
        ref = torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1)
    ds = loader.TensorDecodeDataset([], None, None)
    x = ds.decode(str(rgb))
    assert isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.shape[0] == 3
    g = ds.decode(str(tmp_path / "grey.jpg"))                     # grey -> 3 equal channels
    assert isinstance(g, torch.Tensor) and torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    assert (g.int() - ref.int()).abs().max() <= 1                  # same libjpeg-turbo: equal up to IDCT rounding
    c = ds.decode(str(tmp_path / "cmyk.jpg"))
    assert isinstance(c, Image.Image) and c.mode == "RGB"          # CMYK: the project's PIL conversion
