"""Losses of spec §2 against hand-computed values (2 sigmoid(z) - 1 = tanh(z / 2) gives closed forms)."""
import math

import pytest
import torch

from pretrain.losses import A2MIMLoss, focal_l1, frequency_loss, spatial_loss
from pretrain.models.presets import LossPreset


def _const(values, hw=4, batch=1):
    """(batch, 3, hw, hw) image whose channel c is the constant values[c]."""
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1).expand(batch, 3, hw, hw).clone()


def test_focal_l1_known_values():
    d = torch.tensor([0.0, 1.0, -10.0, 2.5])
    out = focal_l1(d, torch.zeros(4))
    exp = [0.0, math.tanh(0.1), 10 * math.tanh(1.0), 2.5 * math.tanh(0.25)]
    assert torch.allclose(out, torch.tensor(exp), atol=1e-7)
    # gamma 2 squares the modulating factor
    assert math.isclose(focal_l1(torch.tensor(1.0), torch.tensor(0.0), gamma=2.0).item(), math.tanh(0.1) ** 2,
                        rel_tol=1e-5)
    # complex inputs: d is the modulus |3+4j| = 5
    c = focal_l1(torch.tensor([3 + 4j]), torch.tensor([0j]))
    assert c.dtype == torch.float32 and math.isclose(c.item(), 5 * math.tanh(0.5), rel_tol=1e-6)


def test_spatial_loss_4x4_example():
    x = torch.zeros(2, 3, 4, 4)
    x_rec = torch.full((2, 3, 4, 4), 100.0)              # unmasked pixels must not count
    x_rec[0, :, :2, :2] = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
    m = torch.zeros(2, 1, 4, 4)
    m[0, 0, :2, :2] = 1                                   # 4 masked pixels, second image unmasked
    l1 = spatial_loss(x_rec, x, m, "l1")
    assert math.isclose(l1.item(), 4 * (1 + 2 + 3) / (4 + 1e-5) / 3, rel_tol=1e-6)
    foc = spatial_loss(x_rec, x, m, "focal_l1")
    exp = 4 * (math.tanh(0.1) + 2 * math.tanh(0.2) + 3 * math.tanh(0.3)) / (4 + 1e-5) / 3
    assert math.isclose(foc.item(), exp, rel_tol=1e-6)
    with pytest.raises(ValueError, match="focal_l1"):
        spatial_loss(x_rec, x, m, "l2")


def test_frequency_constant_images_dc_only():
    # x_rec - x is constant (1, 2, 0) per channel on 4x4: ortho DC = 16*a/4 = 4a, every other frequency 0
    x = _const([0.5, -1.0, 2.0])
    x_rec = _const([1.5, 1.0, 2.0])
    m = torch.ones(1, 1, 4, 4)
    loss = frequency_loss(x_rec, x, m, unmask_weight=1e-3, focal=True)
    w0 = math.log(5) / math.log(9)                        # D = (4, 8, 0); W = log(1+D)/log(9)
    assert math.isclose(loss.item(), (w0 * 16 + 1.0 * 64) / 48, rel_tol=1e-6)


def test_frequency_2x2_weights_and_gradient_by_hand():
    # channel 0 of x_rec is e = [[1,2],[3,4]], x = 0, everything masked -> x_t = x_rec
    # ortho 2x2 DFT: F[k,l] = 1/2 sum e[m,n] (-1)^(km+ln) = [[5,-1],[-2,0]]; D = [[5,1],[2,0]]
    x_rec = torch.zeros(1, 3, 2, 2)
    x_rec[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x_rec.requires_grad_(True)
    x = torch.zeros(1, 3, 2, 2)
    loss = frequency_loss(x_rec, x, torch.ones(1, 1, 2, 2), 0.0, focal=True)
    a, b = math.log(2) / math.log(6), math.log(3) / math.log(6)   # W = log(1+D)/log(6): [[1,a],[b,0]]
    assert math.isclose(loss.item(), (25 * 1 + 1 * a + 4 * b) / 12, rel_tol=1e-6)
    loss.backward()
    # W detached: dL/de[m,n] = (1/12) sum_kl W F (-1)^(km+ln), with W*F = [[5,-a],[-2b,0]]
    exp = torch.tensor([[5 - a - 2 * b, 5 + a - 2 * b], [5 - a + 2 * b, 5 + a + 2 * b]]) / 12
    assert torch.allclose(x_rec.grad[0, 0], exp, atol=1e-6)
    assert torch.count_nonzero(x_rec.grad[0, 1:]) == 0


def test_frequency_spectra_are_batch_averaged_and_nan_weights_zeroed():
    e = torch.randn(1, 3, 4, 4)
    x_rec = torch.cat([e, -e])                            # batch-mean spectrum of x_rec - x is exactly 0
    x = torch.zeros(2, 3, 4, 4)
    m = torch.ones(2, 1, 4, 4)
    focal = frequency_loss(x_rec, x, m, 0.0, focal=True)  # D = 0 -> W = 0/0 -> NaN -> 0
    assert focal.item() == 0.0 and not torch.isnan(focal)
    assert frequency_loss(x_rec, x, m, 0.0, focal=False).item() > 0   # non-focal: per sample


def test_frequency_unmask_weight_mixing_value_and_gradient():
    # nothing masked: x_t = w_u*x_rec + (1-w_u)*(0.5*x_rec.detach() + 0.5*x); x = 0, x_rec = (1, 2, 0)
    w_u = 0.25
    x_rec = _const([1.0, 2.0, 0.0]).requires_grad_(True)
    x = torch.zeros(1, 3, 4, 4)
    m = torch.zeros(1, 1, 4, 4)
    loss = frequency_loss(x_rec, x, m, w_u, focal=True)
    # x_t = 0.625 * x_rec -> DC D = 4 * 0.625 * (1, 2, 0) = (2.5, 5, 0); W = (log 3.5 / log 6, 1, 0)
    w0 = math.log(3.5) / math.log(6)
    assert math.isclose(loss.item(), (w0 * 2.5 ** 2 + 25) / 48, rel_tol=1e-6)
    loss.backward()
    # only the live w_u share carries gradient: dL/dx_rec = w_u * (1/48) * W_c * 2 * D_c * (1/4) at every pixel
    exp = torch.tensor([w_u / 48 * w0 * 2 * 2.5 / 4, w_u / 48 * 1 * 2 * 5 / 4, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(x_rec.grad, exp.expand(1, 3, 4, 4), atol=1e-7)
    x_rec.grad = None
    frequency_loss(x_rec, x, m, 0.0, focal=True).backward()
    assert torch.count_nonzero(x_rec.grad) == 0           # w_u = 0: no live prediction outside the mask


def test_frequency_non_focal_on_complex_spectra():
    x_rec = torch.cat([_const([1.0, 2.0, 0.0]), -_const([1.0, 2.0, 0.0])])
    x = torch.zeros(2, 3, 4, 4)
    loss = frequency_loss(x_rec, x, torch.ones(2, 1, 4, 4), 1e-3, focal=False)
    # per sample: DC modulus d = 4 * (1, 2, 0); focal_l1 = d*tanh(0.1 d); mean over (B, 3, 4, 4)
    exp = 2 * (4 * math.tanh(0.4) + 8 * math.tanh(0.8)) / 96
    assert math.isclose(loss.item(), exp, rel_tol=1e-6)


def test_frequency_loss_equals_the_spectra_of_x_t_and_x_taken_separately():
    """The implementation transforms x_t - x once (linearity); here both spectra are taken as the spec writes them."""
    g = torch.Generator().manual_seed(0)
    x_rec, x = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    m = (torch.rand(3, 1, 8, 8, generator=g) > 0.4).float()
    w_u = 1e-3
    m_f = m + (1 - m) * w_u
    x_t = x_rec * m_f + (0.5 * x_rec + 0.5 * x) * (1 - m_f)
    f_t, f_x = torch.fft.fft2(x_t, norm="ortho"), torch.fft.fft2(x, norm="ortho")
    D = (f_t.mean(0) - f_x.mean(0)).abs()
    W = (torch.log(D + 1) / torch.log(D + 1).max()).clamp(0, 1)
    assert torch.allclose(frequency_loss(x_rec, x, m, w_u, True), (W * D ** 2).mean(), rtol=1e-5)
    d = (f_t - f_x).abs()
    assert torch.allclose(frequency_loss(x_rec, x, m, w_u, False), (d * torch.tanh(0.1 * d)).mean(), rtol=1e-5)


def test_losses_stay_float32_under_bf16_autocast():
    x_rec, x = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    m = torch.ones(2, 1, 8, 8)
    ref = A2MIMLoss(LossPreset("focal_l1", 0.5, True, 1e-3))(x_rec.bfloat16().float(), x, m)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, logs = A2MIMLoss(LossPreset("focal_l1", 0.5, True, 1e-3))(x_rec.bfloat16(), x, m)
    assert total.dtype == torch.float32 and logs["loss_freq"].dtype == torch.float32
    assert torch.allclose(total, ref, rtol=1e-6)


def test_a2mim_loss_combines_with_lambda_and_detaches_logs():
    x = torch.zeros(1, 3, 4, 4)
    x_rec = _const([1.0, 2.0, 0.0]).requires_grad_(True)
    m = torch.ones(1, 1, 4, 4)
    total, logs = A2MIMLoss(LossPreset("focal_l1", 0.5, True, 1e-3))(x_rec, x, m)
    spa = 16 * (math.tanh(0.1) + 2 * math.tanh(0.2)) / (16 + 1e-5) / 3
    freq = (math.log(5) / math.log(9) * 16 + 64) / 48
    assert math.isclose(logs["loss_spatial"].item(), spa, rel_tol=1e-6)
    assert math.isclose(logs["loss_freq"].item(), freq, rel_tol=1e-6)
    assert math.isclose(total.item(), spa + 0.5 * freq, rel_tol=1e-6)
    assert total.requires_grad and not logs["loss_spatial"].requires_grad
    total_v, logs_v = A2MIMLoss(LossPreset("l1", 0.0))(x_rec, x, m)
    assert logs_v["loss_freq"].item() == 0.0 and torch.equal(total_v.detach(), logs_v["loss_spatial"])
    with pytest.raises(ValueError, match="shape"):
        A2MIMLoss(LossPreset())(x_rec, torch.zeros(1, 3, 8, 8), m)
