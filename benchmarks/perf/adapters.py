"""mmdet Mask R-CNN / mmseg UperNet training-iteration time: the backbone contract (ExportedBackbone) vs direct ViTs.

    python -m benchmarks.perf.adapters --frameworks mmdet mmseg --preset vit_deit_small --size 256 \
        --iters 3 --warmup 1 --out adapters.json   [--batch N (default mmdet 1, mmseg 2)] [--rois 64]

Models come from the project's own configs (transfer/mmdet/configs/mask_rcnn_vit_base_sfp_1x.py: ViTDet
simple feature pyramid; transfer/mmseg/configs/upernet_vit_base_160k.py: Feature2Pyramid + UPerHead + aux
FCN), shrunk for a CPU: backbone preset `--preset`, input `--size` (square, = the backbone's img_size, so the
adapter pads nothing), neck/head widths following the preset's width, SyncBN reverted to BN (as mmengine's
Runner does with launcher none), mmdet: 64 sampled RoIs per image instead of 512 and 200 proposals (the
4conv1fc/mask heads, the same in every variant, otherwise take ~90 % of a CPU iteration). Only the backbone
differs between variants:
  adapter    : ExportedBackbone (transfer/backbones.py FeatureBackbone, registered by transfer/openmmlab_models.py;
               timm Beit under timm's names at `body`), via custom_imports.
  timm       : the SAME timm Beit (same create_model kwargs, same seed, so the same weights) wrapped minimally:
               forward_intermediates(x, out_indices, NCHW). The fairest baseline: identical arithmetic, so the
               ratio isolates what the adapter adds.
  mmseg_beit : the framework's own ViT of this shape, mmseg.models.backbones.BEiT (rel-pos bias per layer,
               LayerScale, q/v bias; no absolute position embedding; its own attention code). mmdet 3.3 has
               no ViT backbone; it is built there through the cross-scope name 'mmseg.BEiT'. (mmseg's
               VisionTransformer lacks rel-pos bias and LayerScale, so it is a different model.)
One iteration = model.train_step on one fixed synthetic batch (uint8 images, 3 boxes + masks / a random
label map): data preprocessor, forward with losses, backward, AdamW step (plain OptimWrapper, lr 1e-4, wd 0.05
for every variant). Variants are stepped alternately in one process (benchmarks/perf/timing.py); the RNG is
re-seeded before every step so the RPN/RoI sampling draws the same numbers for each variant.
Then the backbones alone (keys 'backbone_*'): forward of the same random batch, mean of every output map,
backward - the adapter's own cost without the heads diluting it.
Ratios: adapter / timm, adapter / mmseg_beit (<= 1 means the adapter is no slower).
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import platform
from pathlib import Path

import numpy as np
import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModule

from benchmarks.perf.timing import ratios, time_alternating
from pretrain.fileio import atomic_write_json
from pretrain.models import build_backbone, get_preset

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"mmdet": ROOT / "transfer/mmdet/configs/mask_rcnn_vit_base_sfp_1x.py",
           "mmseg": ROOT / "transfer/mmseg/configs/upernet_vit_base_160k.py"}
VARIANTS = ("adapter", "timm", "mmseg_beit")
DEFAULT_BATCH = {"mmdet": 1, "mmseg": 2}     # mmseg: the PPM's 1x1-pooled BatchNorm needs > 1 sample in training
PERF_VIT = "PerfTimmViT"


class PerfTimmViT(BaseModule):
    """The bare timm model as an OpenMMLab backbone: (B,3,H,W) -> tuple of (B,C,H/16,W/16), one per index."""

    def __init__(self, timm_name: str, img_size: int, out_indices, timm_kwargs: dict, init_cfg=None):
        super().__init__(init_cfg)
        import timm
        self.vit = timm.create_model(timm_name, pretrained=False, img_size=img_size, num_classes=0, **timm_kwargs)
        self.out_indices = list(out_indices)

    def init_weights(self):
        self._is_init = True          # timm initialised at construction, as the contract's body

    def forward(self, x):
        return tuple(self.vit.forward_intermediates(x, indices=self.out_indices, norm=False, stop_early=True,
                                                    output_fmt="NCHW", intermediates_only=True))


def _register(framework: str) -> None:
    if framework == "mmdet":
        import mmseg.models  # noqa: F401  (registers mmseg.BEiT for the cross-scope name)
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    if MODELS.module_dict.get(PERF_VIT) is not PerfTimmViT:
        MODELS.register_module(name=PERF_VIT, module=PerfTimmViT, force=True)


def _arch(preset_name: str, size: int) -> dict:
    """Width/depth/heads/MLP ratio of a ViT preset, read off the built timm model."""
    p = get_preset(preset_name)
    if p.kind != "vit":
        raise ValueError(f"--preset {preset_name} is a {p.kind}; the adapter benchmark needs a ViT preset")
    vit = build_backbone(p, img_size=size)
    blk = vit.blocks[0]
    hidden = blk.mlp.fc1.out_features
    if hidden % vit.embed_dim:       # mmseg BEiT builds its MLP as int-typed mlp_ratio * embed_dims
        raise ValueError(f"--preset {preset_name}: MLP width {hidden} is not a multiple of {vit.embed_dim}")
    return {"preset": p, "dim": vit.embed_dim, "depth": len(vit.blocks), "heads": blk.attn.num_heads,
            "mlp_ratio": hidden // vit.embed_dim}


def backbone_cfg(variant: str, framework: str, arch: dict, size: int, out_indices) -> dict:
    p, drop = arch["preset"], 0.1
    if variant == "adapter":
        return dict(type="ExportedBackbone", timm_name=p.timm_name, timm_kwargs=dict(p.timm_kwargs), kind="vit",
                    img_size=size, out_indices=out_indices, drop_path=drop, final_norm=False)
    if variant == "timm":
        return dict(type=PERF_VIT, timm_name=p.timm_name, img_size=size, out_indices=out_indices,
                    timm_kwargs={**p.timm_kwargs, "drop_path_rate": drop})
    if variant == "mmseg_beit":
        return dict(type="mmseg.BEiT" if framework == "mmdet" else "BEiT", img_size=size, patch_size=16,
                    embed_dims=arch["dim"], num_layers=arch["depth"], num_heads=arch["heads"],
                    mlp_ratio=arch["mlp_ratio"], out_indices=out_indices, qv_bias=True, drop_path_rate=drop,
                    norm_cfg=dict(type="LN", eps=1e-6), final_norm=False, init_values=0.1)
    raise ValueError(f"unknown variant {variant!r} ({', '.join(VARIANTS)})")


def model_cfg(framework: str, variant: str, arch: dict, size: int, num_classes: int, rois: int = 64):
    """The project's config for `framework`, shrunk as described in the module docstring."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(CONFIGS[framework]))        # custom_imports registers ExportedBackbone
    m = copy.deepcopy(cfg.model)
    d = arch["dim"]
    if framework == "mmdet":
        m.backbone = backbone_cfg(variant, framework, arch, size, (arch["depth"] - 1,))
        m.neck.in_channels = d
        m.roi_head.bbox_head.num_classes = num_classes
        m.roi_head.mask_head.num_classes = num_classes
        # fewer RoIs than the COCO setting (512 per image through the 4conv1fc head, ~90 % of a CPU step at
        # any backbone size): the heads are the same in every variant, so they only dilute the ratio
        m.train_cfg.rpn_proposal.update(nms_pre=400, max_per_img=200)
        m.train_cfg.rcnn.sampler.num = rois
    else:
        last = arch["depth"] - 1       # blocks (3, 5, 7, 11) of 12 scaled to the depth; else the last four
        idx = tuple(sorted({round(i * last / 11) for i in (3, 5, 7, 11)}))
        if len(idx) != 4:
            if arch["depth"] < 4:
                raise ValueError(f"--preset {arch['preset'].name}: {arch['depth']} blocks, UperNet needs 4 outputs")
            idx = tuple(range(arch["depth"] - 4, arch["depth"]))
        m.backbone = backbone_cfg(variant, framework, arch, size, idx)
        m.data_preprocessor.size = (size, size)
        m.neck.embed_dim = d
        m.decode_head.in_channels, m.decode_head.channels = [d] * 4, d
        m.decode_head.num_classes = num_classes
        m.auxiliary_head.in_channels, m.auxiliary_head.num_classes = d, num_classes
        m.test_cfg = dict(mode="whole")
    return m


def _batch(framework: str, size: int, batch: int, num_classes: int) -> dict:
    """One fixed synthetic batch in the form the frameworks' data pipelines pack it."""
    from mmengine.structures import InstanceData, PixelData
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    meta = dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size), scale_factor=(1.0, 1.0))
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g))
        if framework == "mmdet":
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            s = DetDataSample(metainfo=meta)
            boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8], [0.2, 0.6, 0.7, 0.95]]) * size
            masks = np.zeros((3, size, size), np.uint8)
            for k, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
                masks[k, y0:y1, x0:x1] = 1
            s.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([0, 1, 2]) % num_classes,
                                          masks=BitmapMasks(masks, size, size))
        else:
            from mmseg.structures import SegDataSample
            s = SegDataSample(metainfo=meta)
            s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size), generator=g))
        samples.append(s)
    return {"inputs": inputs, "data_samples": samples}


def batch_size(framework: str, args) -> int:
    return args.batch if args.batch is not None else DEFAULT_BATCH[framework]


def build_step(framework: str, variant: str, arch: dict, args):
    """-> (step(): one train_step, returns the total loss; backbone_step(): the backbone's forward+backward
    alone on a random batch of the same size; number of backbone parameters)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope
    _register(framework)
    cfg = model_cfg(framework, variant, arch, args.size, args.num_classes, args.rois)
    torch.manual_seed(0)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)                         # init_weights logs every parameter at INFO
    try:
        with DefaultScope.overwrite_default_scope(framework):
            model = revert_sync_batchnorm(MODELS.build(cfg))
            model.init_weights()
    finally:
        logger.setLevel(level)
    model.train()
    with DefaultScope.overwrite_default_scope(framework):
        ow = build_optim_wrapper(model, dict(type="OptimWrapper", optimizer=dict(
            type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)))
    data = _batch(framework, args.size, batch_size(framework, args), args.num_classes)
    n_params = sum(p.numel() for p in model.backbone.parameters())

    def step():
        torch.manual_seed(1)                    # the same sampling draws for every variant and iteration
        with DefaultScope.overwrite_default_scope(framework):
            log_vars = model.train_step(data, ow)
        return float(log_vars["loss"].detach())

    x = torch.randn(batch_size(framework, args), 3, args.size, args.size, generator=torch.Generator().manual_seed(0))

    def backbone_step():
        """The backbone alone: forward, mean of every output map, backward (grads cleared by the next step)."""
        torch.manual_seed(1)
        loss = sum(f.float().mean() for f in model.backbone(x))
        loss.backward()
        ow.zero_grad()
        return float(loss)
    return step, backbone_step, n_params


def _ratio_text(row: dict, variants, prefix: str = "") -> str:
    return "  ".join(f"adapter/{b} {row[f'{prefix}adapter_over_{b}_time_ratio']:.3f} (cpu-time "
                     f"{row[f'{prefix}adapter_over_{b}_cpu_time_ratio']:.3f})" for b in variants if b != "adapter")


def bench(framework: str, args) -> dict:
    """Full train iterations of every variant, then the backbones alone (keys prefixed 'backbone_')."""
    arch = _arch(args.preset, args.size)
    steps, bb_steps, params = {}, {}, {}
    for v in args.variants:
        steps[v], bb_steps[v], params[v] = build_step(framework, v, arch, args)

    def check(v, it, loss):
        if not math.isfinite(loss):
            raise FloatingPointError(f"{framework}/{v}: loss became {loss} at iteration {it}")

    row = {"framework": framework, "batch": batch_size(framework, args), "backbone_params": params,
           **time_alternating(steps, args.warmup, args.iters, check)}
    bb = time_alternating(bb_steps, args.warmup, args.iters, check)
    row.update({f"backbone_{k}": v for k, v in bb.items()})
    has_adapter = "adapter" in args.variants
    for base in args.variants:
        if base != "adapter" and has_adapter:
            row.update(ratios(row, "adapter", base, prefix=f"adapter_over_{base}_"))
            row.update(ratios(bb, "adapter", base, prefix=f"backbone_adapter_over_{base}_"))
    print(f"{framework:6s} iteration: " + "  ".join(f"{v} {row[f'{v}_s']:.3f}s" for v in args.variants) + "  "
          + (_ratio_text(row, args.variants) if has_adapter else ""), flush=True)
    print(f"{framework:6s} backbone : " + "  ".join(f"{v} {bb[f'{v}_s']:.3f}s" for v in args.variants) + "  "
          + (_ratio_text(row, args.variants, "backbone_") if has_adapter else ""), flush=True)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frameworks", nargs="+", default=["mmdet", "mmseg"], choices=sorted(CONFIGS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--preset", default="vit_deit_small", help="ViT preset of pretrain.models (default: 12x384)")
    ap.add_argument("--size", type=int, default=256, help="square input size = backbone img_size (multiple of 32)")
    ap.add_argument("--batch", type=int, default=None,
                    help="images per iteration (default: mmdet 1, mmseg 2 - UPerHead's 1x1 pooled BN needs 2)")
    ap.add_argument("--num-classes", type=int, default=8)
    ap.add_argument("--rois", type=int, default=64, help="mmdet: RoIs sampled per image for the R-CNN heads")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.size % 32:
        ap.error(f"--size {args.size} must be a multiple of 32 (patch 16, pyramid down to stride 32)")
    torch.set_num_threads(args.threads)
    result = {"config": vars(args),
              "host": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                       "torch": torch.__version__},
              "results": []}
    for fw in args.frameworks:
        result["results"].append(bench(fw, args))
        if args.out:
            atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
