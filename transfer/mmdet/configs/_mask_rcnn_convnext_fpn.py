# Shared part of the ConvNeXt Mask R-CNN configs: the ConvNeXt detection recipe (Liu et al. 2022; mmdet 3.3's
# configs/convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py, whose ImageNet weights are replaced by an
# exported backbone): the backbone contract (ExportedBackbone: the weights' ConvNeXt T / S / B from their sidecar),
# its four stages with a new LayerNorm on each output (as mmpretrain's ConvNeXt with gap_before_final_norm=False)
# into FPN; AdamW lr 1e-4, wd 0.05, layer-wise lr decay 0.95 (mmdet's 'layer_wise' ConvNeXt grouping, 6 layers for
# T, 12 for S/B), 1000-iteration linear warm-up, AMP (--amp; fp32 on a CPU). Size configs set drop path (T 0.4,
# S 0.6, B 0.7) and the schedule (3x: DETR-style multi-scale + crop, 36 epochs, steps 27/33; 1x: 12 epochs single
# scale, steps 8/11). Batch 16 (8 GPUs x 2).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['transfer.mmdet.models'], allow_failed_imports=False)
drop_path = 0.4
model = dict(
    backbone=dict(_delete_=True, type='ExportedBackbone', out_indices=(0, 1, 2, 3), drop_path=drop_path,
                  out_norms=True),
    neck=dict(in_channels='from_backbone'))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise'))
