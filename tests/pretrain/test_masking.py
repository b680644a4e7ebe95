"""Block masks, pixel upsampling and masked-pixel fill, against hand-computed values."""
import numpy as np
import pytest
import torch

from pretrain.masking import BlockMaskGenerator, fill_masked, repeat_mask, upsample_mask


def _cells(mask: torch.Tensor, scale: int) -> np.ndarray:
    """Collapse a (h, w) mask made of scale x scale constant blocks back to its cell grid (asserting constancy)."""
    m = mask.numpy()
    h, w = m.shape
    blocks = m.reshape(h // scale, scale, w // scale, scale)
    assert (blocks == blocks[:, :1, :, :1]).all(), "mask is not constant inside each cell"
    return blocks[:, 0, :, 0]


def test_default_224_exactly_30_of_49_cells_over_many_seeds():
    gen = BlockMaskGenerator(224, 32, 16, 0.6)
    assert gen.count == 30 and gen.cells == 49 and gen.out_shape == (14, 14)
    freq = np.zeros((7, 7))
    n = 500
    for seed in range(n):
        mask = gen(np.random.default_rng(seed))
        assert mask.shape == (14, 14) and mask.dtype == torch.uint8
        assert set(np.unique(mask.numpy())) <= {0, 1}
        cells = _cells(mask, 2)
        assert cells.sum() == 30
        assert mask.sum().item() == 30 * 4
        freq += cells
    # uniform choice: every cell masked with probability 30/49 = 0.612 (std of the mean ~0.022 at n=500)
    assert np.abs(freq / n - 30 / 49).max() < 0.11


def test_2x2_cell_grid_example():
    # 64 px, 32 px cells -> 2x2 cells; ratio 0.5 -> exactly 2 masked; output at stride 16 -> 4x4 (2x2 blocks)
    gen = BlockMaskGenerator(64, 32, 16, 0.5)
    seen = set()
    for seed in range(60):
        mask = gen(np.random.default_rng(seed))
        assert mask.shape == (4, 4)
        cells = _cells(mask, 2)
        assert cells.sum() == 2
        seen.add(tuple(cells.ravel()))
    assert len(seen) == 6            # all C(4,2) = 6 arrangements occur
    # a given rng state gives the cells of its permutation's first two entries
    first = np.random.default_rng(7).permutation(4)[:2]
    cells = _cells(gen(np.random.default_rng(7)), 2).ravel()
    assert sorted(np.flatnonzero(cells)) == sorted(first)
    a = gen(np.random.default_rng(123))
    assert torch.equal(a, gen(np.random.default_rng(123)))


def test_ceil_and_float_noise():
    assert BlockMaskGenerator(64, 32, 32, 0.6).count == 3          # ceil(2.4)
    # non-square 64x160 -> 2x5 = 10 cells; ceil(10 * 0.3) = 3 (the official float ceil: tests/pretrain/test_fidelity.py)
    gen = BlockMaskGenerator((64, 160), 32, 16, 0.3)
    assert gen.count == 3 and gen.out_shape == (4, 10)
    mask = gen(np.random.default_rng(0))
    assert mask.shape == (4, 10) and _cells(mask, 2).sum() == 3
    assert BlockMaskGenerator(224, 32, 4, 0.6)(np.random.default_rng(0)).shape == (56, 56)
    assert BlockMaskGenerator(224, 32, 32, 0.6)(np.random.default_rng(0)).sum() == 30


@pytest.mark.parametrize("kw,match", [
    (dict(input_size=100), "not divisible by mask_patch"),
    (dict(mask_patch=32, model_patch=12), "not divisible by model_patch"),
    (dict(ratio=1.5), "ratio"),
    (dict(mask_patch=0), "positive"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        BlockMaskGenerator(**kw)


def test_needs_numpy_generator():
    with pytest.raises(TypeError, match="Generator"):
        BlockMaskGenerator()(0)


def test_upsample_mask_hand_example():
    mask = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.uint8)
    up = upsample_mask(mask, (4, 6))
    expected = torch.tensor([[1, 1, 1, 0, 0, 0],
                             [1, 1, 1, 0, 0, 0],
                             [0, 0, 0, 1, 1, 1],
                             [0, 0, 0, 1, 1, 1]], dtype=torch.float32)
    assert up.shape == (1, 1, 4, 6) and up.dtype == torch.float32
    assert torch.equal(up[0, 0], expected)
    assert repeat_mask(mask, (4, 4)).dtype == torch.uint8
    with pytest.raises(ValueError, match="does not divide"):
        upsample_mask(mask, (5, 4))


def test_fill_mean_uses_all_pixels_of_each_image():
    img = torch.tensor([[[[1., 2.], [3., 6.]],      # channel mean 3 (visible-only mean would be 11/3)
                         [[0., 0.], [0., 4.]],      # mean 1
                         [[-2., -2.], [-2., -2.]]]])  # mean -2
    img = torch.cat([img, img + 10])                # second image: means 13, 11, 8
    mask_pix = torch.tensor([[[[1., 0.], [0., 0.]]], [[[0., 0.], [0., 1.]]]])
    out = fill_masked(img, mask_pix, "mean")
    exp = img.clone()
    exp[0, :, 0, 0] = torch.tensor([3., 1., -2.])
    exp[1, :, 1, 1] = torch.tensor([13., 11., 8.])
    assert torch.allclose(out, exp)
    zero = fill_masked(img, mask_pix, "zero")
    exp0 = img.clone()
    exp0[0, :, 0, 0] = 0
    exp0[1, :, 1, 1] = 0
    assert torch.equal(zero, exp0)
    with pytest.raises(ValueError, match="mean"):
        fill_masked(img, mask_pix, "median")
