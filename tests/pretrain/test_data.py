"""Data: image lists, per-sample deterministic seeding (workers included), skips + budget, bomb guard, sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from imgfactory import make_images, write_corrupt
from pretrain.data import (IMAGENET_MEAN, IMAGENET_STD, DataError, MaskedImageDataset, ResumableDistributedSampler,
                           build_transform, collate, list_images)
from pretrain.masking import BlockMaskGenerator

MASK = BlockMaskGenerator(input_size=64, mask_patch=16, model_patch=16, ratio=0.6)   # 4x4 grid, 10 masked


def _dataset(paths, **kw):
    return MaskedImageDataset(paths, build_transform(64, (0.5, 1.0), (0.75, 4 / 3), 0.5), MASK, seed=7, **kw)


def test_list_images_for_each_layout(tmp_path):
    make_images(tmp_path / "inet", n=6, classes=3, layout="imagenet")
    (tmp_path / "inet" / "train" / "n00000000" / "notes.txt").write_text("not an image")
    paths = list_images(tmp_path / "inet", "imagenet_folder")
    assert len(paths) == 6 and paths == sorted(paths) and all(p.endswith(".JPEG") for p in paths)
    make_images(tmp_path / "flat" / "a" / "b", n=3)                 # recursive
    assert len(list_images(tmp_path / "flat", "image_folder")) == 3
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\n{paths[0]}\n\ninet/train/n00000001/img_0001.JPEG\n")
    assert list_images(lst, "file_list") == [paths[0], str(tmp_path / "inet/train/n00000001/img_0001.JPEG")]
    with pytest.raises(DataError, match=r"folder .*nope/train not found \(expected .*/train/<wnid>/\*.JPEG\)"):
        list_images(tmp_path / "nope", "imagenet_folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        list_images(tmp_path / "empty", "image_folder")


def test_transform_normalises_a_solid_image_to_hand_values(tmp_path):
    p = tmp_path / "red.png"
    Image.new("RGB", (90, 70), (255, 0, 51)).save(p)
    x, mask, skipped = _dataset([str(p)])[(0, 0)]
    rgb = torch.tensor([1.0, 0.0, 0.2])
    expected = (rgb - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)   # e.g. R: (1-.485)/.229 = 2.2489
    assert x.shape == (3, 64, 64) and type(x) is torch.Tensor
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-4) and x.std(dim=(1, 2)).max() < 1e-4
    assert mask.shape == (4, 4) and mask.dtype == torch.uint8 and int(mask.sum()) == 10 and skipped == []


def test_samples_depend_only_on_seed_epoch_index(tmp_path):
    paths = list_images(make_images(tmp_path, n=8), "image_folder")
    ds = _dataset(paths)
    a, b = ds[(3, 1)], ds[(3, 1)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = ds[(3, 2)]                                            # another epoch: another crop and mask
    assert not torch.equal(a[0], c[0]) or not torch.equal(a[1], c[1])
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    ds[(5, 0)]
    assert torch.equal(torch.rand(1), before), "a sample must not consume the global torch RNG"
    # identical batches with 0 and 2 workers (worker seeding does not leak into samples)
    keys = [(i, 4) for i in range(8)]
    loads = [list(DataLoader(ds, batch_size=4, sampler=keys, num_workers=w, collate_fn=collate,
                             generator=torch.Generator())) for w in (0, 2)]
    for (x0, m0, _), (x2, m2, _) in zip(*loads):
        assert torch.equal(x0, x2) and torch.equal(m0, m2)


def test_corrupt_image_is_skipped_named_and_counted(tmp_path):
    paths = list_images(make_images(tmp_path, n=4), "image_folder")
    broken = write_corrupt(tmp_path, "broken.png")
    ds = _dataset([str(broken), *paths], skip_budget=5)
    with pytest.warns(UserWarning, match=r"skipping image: .*broken.png: unreadable image"):
        x, mask, skipped = ds[(0, 0)]
    assert x.shape == (3, 64, 64) and len(skipped) == 1 and "broken.png" in skipped[0]
    assert not ImageFile.LOAD_TRUNCATED_IMAGES              # truncated files are skipped, never half-decoded
    with pytest.warns(UserWarning, match="broken.png"):
        again = ds[(0, 0)]                                   # the replacement is deterministic
    assert torch.equal(again[0], x)
    all_bad = _dataset([str(broken)], skip_budget=3)
    with pytest.raises(DataError, match=r"4 unreadable images in a row.*data.skip_budget=3.*broken.png"):
        with pytest.warns(UserWarning):
            all_bad[(0, 0)]


def test_decompression_bomb_guard_is_a_clear_refusal(tmp_path):
    p = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(p)
    ds = _dataset([str(p), str(p)], skip_budget=0, max_image_pixels=1000)
    with pytest.raises(DataError, match=r"big.png: 64x64 = 4096 pixels exceeds the decompression-bomb limit 1000"):
        ds.decode(str(p))
    with pytest.raises(DataError, match="skip budget"), pytest.warns(UserWarning, match="decompression-bomb"):
        ds[(0, 0)]


def test_sampler_shards_are_disjoint_and_hand_checked():
    s0, s1 = (ResumableDistributedSampler(7, 2, r, shuffle=False) for r in (0, 1))
    assert [i for i, _ in s0] == [0, 2, 4] and [i for i, _ in s1] == [1, 3, 5]     # 7 // 2 = 3 each, tail dropped
    a, b = (ResumableDistributedSampler(100, 2, r, seed=3) for r in (0, 1))
    for s in (a, b):
        s.set_epoch(5)
    ia, ib = a.indices(), b.indices()
    assert len(ia) == len(ib) == 50 and not set(ia) & set(ib) and len(set(ia) | set(ib)) == 100
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(3 + 5)).tolist()   # seed + epoch
    assert ia == perm[0::2] and ib == perm[1::2]
    a.set_epoch(5, offset=20)                                   # resume: the very next sample
    assert list(a) == [(i, 5) for i in ia[20:]] and len(a) == 30
    a.set_epoch(6)
    assert a.indices() != ia
    with pytest.raises(ValueError, match="offset 51 outside"):
        a.set_epoch(6, offset=51)


def test_mask_generator_rng_is_per_sample():
    g1, g2 = np.random.default_rng(1), np.random.default_rng(1)
    assert torch.equal(MASK(g1), MASK(g2))
