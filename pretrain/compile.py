"""torch.compile of the training network behind run.compile, with a clean fallback to eager.

run.compile: true | false | null (auto: compile on CUDA, where it was measured faster - compiled/eager step time
0.70 for the A²MIM ResNet-50 bf16 step on an H100, benchmarks/perf/results/gpu_check_h100.json; eager on CPU, where
compilation costs minutes of a short run and buys little).

torch.compile is lazy: it fails (no C compiler, no Triton, an unsupported op) at the first call, not when it is
asked for. CompiledWithFallback makes that first call the test: before it, it snapshots the CPU/CUDA RNG states
and the module's buffers (BatchNorm statistics); if the compiled call raises, it puts both back, logs one warning
with the reason and runs eager from then on - the step that tried is then exactly the eager step (same RNG draws,
same buffers), so a run that fell back equals a run that never compiled. Only the forward is guarded: a failure
compiling the backward (AOTAutograd compiles it lazily at the first backward) still raises, naming run.compile.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

log = logging.getLogger("pretrain")


def want_compile(setting: bool | None, device: torch.device) -> bool:
    """run.compile -> compile or not on this device (None: auto = CUDA only)."""
    if setting is None:
        return device.type == "cuda"
    return bool(setting)


class CompiledWithFallback(nn.Module):
    """Calls the compiled module; the first call that raises switches to the eager module for good.

    Holds the eager module as a submodule (state_dict keys gain an `eager.` prefix: the loop saves its plain model,
    never this wrapper). `compiled` is None once fallen back; `fallback_reason` says why."""

    def __init__(self, module: nn.Module, backend="inductor", **compile_kwargs):
        super().__init__()
        self.eager = module
        # not a registered submodule (its parameters are `eager`'s): kept in the instance dict
        object.__setattr__(self, "_compiled", torch.compile(module, backend=backend, **compile_kwargs))
        self._tested = False
        self.fallback_reason: str | None = None

    @property
    def compiled(self):
        return self._compiled

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.eager, name)   # e.g. DDP's no_sync, the task model's helpers

    def forward(self, *args, **kwargs):
        if self._compiled is None:
            return self.eager(*args, **kwargs)
        if self._tested:
            return self._compiled(*args, **kwargs)
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        buffers = {k: v.detach().clone() for k, v in self.eager.named_buffers()}
        try:
            out = self._compiled(*args, **kwargs)
        except Exception as e:  # BackendCompilerFailed, Unsupported, InternalTorchDynamoError, missing compilers ...
            first = " ".join([ln.strip() for ln in str(e).splitlines() if ln.strip()][:2])[:300]
            self.fallback_reason = f"{type(e).__name__}: {first}"
            log.warning("torch.compile failed at the first step (%s); continuing eager (set run.compile=false to "
                        "skip the attempt)", self.fallback_reason)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            with torch.no_grad():
                for k, v in self.eager.named_buffers():
                    v.copy_(buffers[k])
            object.__setattr__(self, "_compiled", None)
            try:
                import torch._dynamo as dynamo
                dynamo.reset()          # drop half-built caches and guards
            except Exception:  # pragma: no cover - dynamo missing or already torn down
                pass
            return self.eager(*args, **kwargs)
        self._tested = True
        return out


def compile_model(net: nn.Module, setting: bool | None, device: torch.device, backend="inductor") -> nn.Module:
    """The network the loop trains through: `net` itself, or a CompiledWithFallback around it."""
    if not want_compile(setting, device):
        return net
    try:
        wrapped = CompiledWithFallback(net, backend=backend)
    except Exception as e:  # torch.compile refusing up front (unsupported Python / platform)
        log.warning("torch.compile unavailable (%s: %s); training eager", type(e).__name__, e)
        return net
    log.info("torch.compile on (run.compile=%s, device %s, backend %s)", setting, device, backend)
    return wrapped


__all__ = ["CompiledWithFallback", "compile_model", "want_compile"]
