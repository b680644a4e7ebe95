# Mask R-CNN R50-FPN, 1x (spec §5): SyncBN in backbone, FPN and heads, all stages trainable, 4conv1fc box
# head, multi-scale 640-800 training, SGD lr 0.02 / batch 16, 12 epochs, steps 8 and 11, 500-it warm-up
# (mmdet's 1x schedule). Backbone weights come through the load gate (train.py --weights).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_coco_ms_train.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['transfer.mmdet.models'], allow_failed_imports=False)
benchmark = dict(protocol='maskrcnn-fpn-1x')   # result.json protocol id (benchmarks/reference.yaml)

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=False, init_cfg=None),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
