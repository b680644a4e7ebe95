"""MoCo-protocol COCO configs as overrides of the INSTALLED detectron2 model zoo (nothing copied).

    r50_c4_1x     Mask R-CNN R50-C4 1x (90k it @ 16, steps 60k/80k)          base: mask_rcnn_R_50_C4_1x.yaml
    r50_c4_2x     Mask R-CNN R50-C4 2x (180k it, steps 120k/160k)            base: mask_rcnn_R_50_C4_1x.yaml
    r50_fpn_1x    Mask R-CNN R50-FPN 1x, SyncBN in FPN and heads, 4conv1fc   base: mask_rcnn_R_50_FPN_1x.yaml
    exported_fpn_1x  Mask R-CNN FPN 1x on ANY exported CNN (the backbone contract: ResNet, ConvNeXt, any timm CNN;
                  its four stages into FPN), heads / schedule / SGD as r50_fpn_1x   base: mask_rcnn_R_50_FPN_1x.yaml
    vit_base_sfp  Mask R-CNN on an exported plain ViT (the contract) + ViTDet simple feature pyramid, AdamW 3e-4,
                  wd .05, layer decay .65, 12 epochs                        base: mask_rcnn_R_50_FPN_1x.yaml
The C4 and r50_fpn configs keep detectron2's native ResNet (the stock MoCo configs; res5 in the C4 RoI head); the
exported ones build transfer.backbones.FeatureBackbone from the weights' sidecar (MODEL.EXPORTED.*, filled by
train.py). Every config loads the weights in memory through the gate (transfer/detectron2/gate.py).
MoCo protocol (all R50 configs): SyncBN everywhere and trainable (FREEZE_AT 0), RGB input normalised with
torchvision's mean/std in 0-255 units, STRIDE_IN_1X1 False (torchvision puts the stride in the 3x3 conv),
short side 640..800 step 32 (long <= 1333), test 800, SGD lr 0.02 momentum .9 wd 1e-4, batch 16,
1000-iteration linear warm-up (detectron2 default), PreciseBN before evaluation.
"""
from __future__ import annotations

from detectron2 import model_zoo
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

TORCHVISION_MEAN_255 = [123.675, 116.280, 103.530]   # RGB, = 255 * (0.485, 0.456, 0.406)
TORCHVISION_STD_255 = [58.395, 57.120, 57.375]       # RGB, = 255 * (0.229, 0.224, 0.225)
MULTI_SCALE = tuple(range(640, 801, 32))             # (640, 672, 704, 736, 768, 800)
_ZOO_C4 = "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml"
_ZOO_FPN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
EXPORTED_BACKBONE = "build_exported_backbone"        # transfer/detectron2/modeling.py


def add_a2mim_config(cfg: CN) -> CN:
    """Keys this project adds (present in every config, so `opts` stay strict for all of them)."""
    cfg.MODEL.EXPORTED = CN()                  # the backbone contract (BACKBONE.NAME build_exported_backbone)
    cfg.MODEL.EXPORTED.TIMM_NAME = ""          # from the weights' sidecar (train.py)
    cfg.MODEL.EXPORTED.TIMM_KWARGS = "{}"      # JSON, from the sidecar
    cfg.MODEL.EXPORTED.KIND = "cnn"            # cnn | vit (the config's; the weights must match)
    cfg.MODEL.EXPORTED.OUT_INDICES = (-4, -3, -2, -1)   # CNN: the four stages; ViT: (-1,) the last block
    cfg.MODEL.EXPORTED.IMG_SIZE = 1024         # ViT: square input; images are padded to it (fixed pos tables)
    cfg.MODEL.EXPORTED.DROP_PATH = 0.0
    cfg.MODEL.EXPORTED.FINAL_NORM = False      # ViT: the final LayerNorm on the last block's tokens
    cfg.MODEL.EXPORTED.SFP_NORM = "LN"         # ViT: norm inside the simple feature pyramid (ViTDet)
    cfg.MODEL.EXPORTED.SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)   # ViT: stride 16 -> p2..p5 (+ p6 by max-pool)
    cfg.SOLVER.OPTIMIZER = "SGD"               # SGD (detectron2's own builder) | ADAMW (transfer.param_groups)
    cfg.SOLVER.LAYER_DECAY = 1.0               # ADAMW only: lr *= LAYER_DECAY ** (depth + 1 - layer id)
    cfg.SOLVER.BETAS = (0.9, 0.999)
    return cfg


def _from_zoo(path: str) -> CN:
    cfg = add_a2mim_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file(path))
    cfg.MODEL.WEIGHTS = ""                     # the zoo points at an MSRA ImageNet model: never load that silently
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), ()   # set by train.py from --data-root
    return cfg


def _moco_resnet(cfg: CN) -> CN:
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = list(TORCHVISION_MEAN_255), list(TORCHVISION_STD_255)
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "SyncBN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = MULTI_SCALE, 1333
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 800, 1333
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR = 16, 0.02
    cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 0.9, 1e-4
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 1000, 1e-3
    cfg.TEST.PRECISE_BN.ENABLED = True
    return cfg


def r50_c4(schedule: str) -> CN:
    cfg = _moco_resnet(_from_zoo(_ZOO_C4))
    cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeadsExtraNorm"   # modeling.py: extra norm after res5
    if schedule == "2x":
        cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER = (120000, 160000), 180000
    else:
        cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER = (60000, 80000), 90000
    return cfg


def r50_fpn_1x() -> CN:
    cfg = _moco_resnet(_from_zoo(_ZOO_FPN))
    cfg.MODEL.FPN.NORM = "SyncBN"
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 4, 1
    cfg.MODEL.ROI_BOX_HEAD.NORM = "SyncBN"
    cfg.MODEL.ROI_MASK_HEAD.NORM = "SyncBN"
    cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER = (60000, 80000), 90000
    return cfg


def exported_fpn_1x() -> CN:
    """Any exported CNN through the backbone contract, its four stages into detectron2's FPN; the rest as r50_fpn_1x."""
    cfg = r50_fpn_1x()
    cfg.MODEL.BACKBONE.NAME = EXPORTED_BACKBONE
    cfg.MODEL.EXPORTED.KIND, cfg.MODEL.EXPORTED.OUT_INDICES = "cnn", (-4, -3, -2, -1)
    return cfg


def vit_base_sfp() -> CN:
    """An exported ViT (ViT-B) + ViTDet simple feature pyramid; heads as the R50-FPN config (4conv1fc, SyncBN).
    90k it @ 16 = 12.3 epochs of COCO train2017 (detectron2's 1x); lr steps at epochs 9 and 11 (67.5k, 82.5k).
    The final LayerNorm is applied to the last block's tokens (the map the A²MIM decoder read in pre-training)."""
    cfg = r50_fpn_1x()
    cfg.MODEL.BACKBONE.NAME = EXPORTED_BACKBONE
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    e = cfg.MODEL.EXPORTED
    e.KIND, e.OUT_INDICES, e.IMG_SIZE, e.DROP_PATH, e.FINAL_NORM = "vit", (-1,), 1024, 0.1, True
    cfg.INPUT.MIN_SIZE_TRAIN = tuple(range(480, 801, 32))   # DETR-style multi-scale, as the official ViT config
    cfg.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.MAX_SIZE_TEST = 1024   # never larger than the square pad
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = "ADAMW", 3e-4, 0.05
    cfg.SOLVER.LAYER_DECAY = 0.65
    cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER = (67500, 82500), 90000
    cfg.SOLVER.AMP.ENABLED = True              # global attention over 64x64 tokens: fp16 halves activation memory
    return cfg


CONFIGS = {"r50_c4_1x": lambda: r50_c4("1x"), "r50_c4_2x": lambda: r50_c4("2x"),
           "r50_fpn_1x": r50_fpn_1x, "exported_fpn_1x": exported_fpn_1x, "vit_base_sfp": vit_base_sfp}


def check_config(cfg: CN) -> None:
    """Cross-key checks that detectron2 would only report deep inside a run."""
    if cfg.MODEL.BACKBONE.NAME == EXPORTED_BACKBONE and cfg.MODEL.EXPORTED.KIND == "vit":
        s = cfg.MODEL.EXPORTED.IMG_SIZE
        too_big = {k: v for k, v in (("INPUT.MAX_SIZE_TRAIN", cfg.INPUT.MAX_SIZE_TRAIN),
                                     ("INPUT.MAX_SIZE_TEST", cfg.INPUT.MAX_SIZE_TEST)) if v > s}
        if too_big:
            raise ValueError(f"{too_big} exceed MODEL.EXPORTED.IMG_SIZE={s}: images are square-padded to IMG_SIZE, "
                             "so the long side must not be larger")
    if cfg.SOLVER.OPTIMIZER not in ("SGD", "ADAMW"):
        raise ValueError(f"SOLVER.OPTIMIZER must be SGD or ADAMW, got {cfg.SOLVER.OPTIMIZER!r}")


def tiny_opts(name: str, size: int = 96, iters: int = 2) -> list[str]:
    """--tiny: a CPU smoke run of config `name` (KEY VALUE pairs, applied before the user's own): short side `size`,
    `iters` iterations of batch 2, few RoIs and detections, no workers, no PreciseBN, no periodic checkpoint. The
    configs' lr and warm-up stay; the ViT's position table is resized to the input (MODEL.EXPORTED.IMG_SIZE)."""
    longest = size * 4 // 3
    opts = ["SOLVER.MAX_ITER", str(iters), "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(longest), "INPUT.MIN_SIZE_TEST",
            str(size), "INPUT.MAX_SIZE_TEST", str(longest), "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
            "MODEL.RPN.POST_NMS_TOPK_TEST", "20", "TEST.DETECTIONS_PER_IMAGE", "20",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.PRECISE_BN.ENABLED", "False"]
    if name.startswith("vit"):
        opts += ["MODEL.EXPORTED.IMG_SIZE", str(-(-longest // 32) * 32)]
    return opts


def get_config(name: str, opts: list[str] | tuple = ()) -> CN:
    """Config `name` with `opts` (KEY VALUE pairs, detectron2 syntax; unknown keys fail)."""
    if name not in CONFIGS:
        import difflib
        near = difflib.get_close_matches(name, CONFIGS, n=1)
        raise KeyError(f"unknown detectron2 config {name!r}{f' (did you mean {near[0]!r}?)' if near else ''}; "
                       f"known: {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]()
    if len(opts) % 2:
        raise ValueError(f"opts must be KEY VALUE pairs, got an odd number: {list(opts)}")
    cfg.merge_from_list(list(opts))
    check_config(cfg)
    return cfg


def adapt_to_runtime(cfg: CN, world_size: int, cuda: bool) -> list[str]:
    """Make a multi-GPU config run where it is launched; returns what was changed (logged + kept in the run).

    * one process: every `*NORM` key set to SyncBN becomes BN. SyncBN over a world of one computes exactly BN's
      batch statistics, and torch's SyncBatchNorm refuses CPU tensors in training.
    * no CUDA: MODEL.DEVICE cpu and AMP off (detectron2's AMPTrainer is CUDA-only).
    """
    changed = []
    if world_size == 1:
        def walk(node: CN, path: str):
            for k, v in node.items():
                if isinstance(v, CN):
                    walk(v, f"{path}{k}.")
                elif k.endswith("NORM") and v == "SyncBN":
                    node[k] = "BN"
                    changed.append(f"{path}{k}: SyncBN -> BN (world size 1)")
        walk(cfg, "")
    if not cuda:
        if cfg.MODEL.DEVICE != "cpu":
            changed.append(f"MODEL.DEVICE: {cfg.MODEL.DEVICE} -> cpu (no CUDA)")
            cfg.MODEL.DEVICE = "cpu"
        if cfg.SOLVER.AMP.ENABLED:
            changed.append("SOLVER.AMP.ENABLED: True -> False (no CUDA)")
            cfg.SOLVER.AMP.ENABLED = False
    return changed
