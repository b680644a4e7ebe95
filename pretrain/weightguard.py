"""Checks a Loop runs before it writes a checkpoint: no non-finite weight, no explosion since the last checkpoint.

An exploding run (lr far too high, clip_grad off) can keep a finite loss for a step or two while its weights grow
by orders of magnitude; the NaN guard of the loss then fires one step after a useless checkpoint was written. The
growth check compares max |w| with the value at the previous checkpoint (or at start/resume).
"""
from __future__ import annotations

import torch.nn as nn


def max_abs_weight(model: nn.Module) -> tuple[float, str]:
    """(max |w| over floating tensors of the state dict, the key holding it)."""
    best, name = 0.0, ""
    for k, v in model.state_dict().items():
        if v.is_floating_point() and v.numel():
            m = float(v.detach().abs().max())
            if m > best:
                best, name = m, k
    return best, name


def check_weights(model: nn.Module, step: int, ref: tuple[int, float], growth: float | None) -> tuple[int, float]:
    """Raise FloatingPointError when a weight is non-finite or max |w| grew more than `growth`x since `ref`
    = (step, max |w|); return the new reference."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:  # never replace a good checkpoint with a broken state
        raise FloatingPointError(f"non-finite weights at step={step} in {bad[:5]}"
                                 f"{' ...' if len(bad) > 5 else ''}; no checkpoint of this state is written")
    now, name = max_abs_weight(model)
    ref_step, ref_val = ref
    if growth is not None and now > growth * max(ref_val, 1e-3):
        raise FloatingPointError(
            f"weights exploded: max |w| = {now:.3g} ({name}) at step={step}, {now / max(ref_val, 1e-3):.3g}x "
            f"the {ref_val:.3g} of step {ref_step} (more than run.max_weight_growth={growth:g}); no checkpoint of "
            f"this state is written (lower the lr, or clip gradients with optim.clip_grad)")
    return step, now
