# Mask R-CNN ViT-B with a ViTDet-style simple feature pyramid, 1x (spec §5; A²MIM's COCO ViT-B row:
# 49.4 / 43.5 AP). The official A²MIM config fed single-stride ViT features to an FPN; here the last block's
# stride-16 map goes through SimpleFeaturePyramid (deconv x4 / deconv x2 / identity / maxpool, + P6) as in
# ViTDet. Backbone: the backbone contract (ExportedBackbone: the weights' timm Beit, rel-pos bias + abs pos +
# LayerScale), input padded to 1024x1024 (pos-embed and rel-pos tables resized from 224 when the gate loads them),
# drop path 0.1, no final norm. Data: ViTDet large-scale jitter (1024, ratio 0.1-2.0). Optimiser: AdamW lr 3e-4, wd 0.05 (none on
# norms, biases, pos_embed, cls_token, rel-pos tables, LayerScale), layer-wise lr decay 0.7 (ViTDet's
# ViT-B value; the paper does not state one), 12 epochs, steps 9 and 11 (official config), 4conv1fc SyncBN
# box head, SyncBN mask head, 2-conv RPN (ViTDet).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['transfer.mmdet.models'], allow_failed_imports=False)
benchmark = dict(protocol='maskrcnn-vit')   # result.json protocol id (benchmarks/reference.yaml)

image_size = 1024
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(_delete_=True, type='ExportedBackbone', img_size=image_size, out_indices=(-1,), drop_path=0.1,
                  final_norm=False),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels='from_backbone[-1]', out_channels=256,
              scale_factors=(4.0, 2.0, 1.0, 0.5), num_outs=5, norm_cfg=dict(type='LN2d-timm')),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=(image_size, image_size), ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(image_size, image_size),
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.7))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
