# Mask R-CNN R50-C4, 2x, MoCo detection protocol (spec §5; A²MIM's COCO R50 row: 39.8 / 34.9 AP):
# SyncBN everywhere and trainable, no frozen stages, pytorch-style ResNet (stride in the 3x3 conv, as the
# pre-trained torchvision-layout backbone), res5 as the RoI head followed by an extra norm
# (ResLayerExtraNorm, transfer/mmdet/models.py), RGB input with ImageNet mean/std, multi-scale 640-800,
# SGD lr 0.02 / batch 16 (8 GPUs x 2), 24 epochs, steps 16 and 23, 1000-iteration warm-up.
# Weights: `python -m transfer.mmdet.train THIS --weights exported.safetensors` loads layer1-3 into
# `backbone` and layer4 into `roi_head.shared_head` through the load gate (no init_cfg=Pretrained).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50-caffe-c4.py',
    './_coco_ms_train.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['transfer.mmdet.models'], allow_failed_imports=False)
benchmark = dict(protocol='maskrcnn-c4-ms2x')   # result.json protocol id (benchmarks/reference.yaml)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=False, style='pytorch', init_cfg=None),
    roi_head=dict(shared_head=dict(type='ResLayerExtraNorm', style='pytorch', norm_cfg=norm_cfg,
                                   norm_eval=False)))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 23], gamma=0.1),
]
