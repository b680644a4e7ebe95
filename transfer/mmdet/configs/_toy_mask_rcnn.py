# Shared part of the toy-world Mask R-CNN configs (benchmarks/toydata.py: 96 px COCO-format scenes with up to 5
# shapes of 8 classes, objects 16-48 px across). mmdet's Mask R-CNN FPN, made CPU-sized on purpose (a toy protocol,
# never compared with published numbers: benchmark.protocol = 'toy'):
#   - images at their own 96 px (flip only); anchors of scale 4 (16/32/64/... px on P2..P6) for the small shapes
#   - neck/heads 64 channels (mmdet's 2fc box head with 256-d fcs, 2-conv mask head; BN), RoI counts sized for
#     96 px images (300 proposals and 32 sampled RoIs per image in training; 50 proposals, 20 detections at test):
#     mmcv's CPU RoIAlign backward and the RoI heads, not the backbone, would otherwise dominate the time
#   - SGD 0.02 momentum 0.9 wd 1e-4, batch 4, `max_iters` iterations: 50-iteration linear warm-up, x0.1 at 80 %
#   - evaluation once, at the end, on every val image with mmdet's CocoMetric (bbox + segm)
#   - no checkpoints (a run takes about a minute on 2 cores; an interrupted one starts again)
# The backbone configs (toy_mask_rcnn_fpn.py: any CNN, toy_mask_rcnn_sfp.py: any ViT) set backbone/neck/optimiser.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['transfer.mmdet.models'], allow_failed_imports=False)

benchmark = dict(dataset='toy_coco', protocol='toy')      # result.json fields (transfer/openmmlab_common.py)
image_size = 96
max_iters = 200
classes = ('circle', 'square', 'triangle', 'star', 'cross', 'ring', 'crescent', 'heart')   # COCO ids 1,3,..,15
metainfo = dict(classes=classes)
norm_cfg = dict(type='SyncBN', requires_grad=True)          # BN on one process (the Runner reverts SyncBN)
ch = 64
model = dict(
    neck=dict(out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=dict(in_channels=ch, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(num_convs=2, in_channels=ch, conv_out_channels=ch, norm_cfg=norm_cfg,
                       num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=600, max_per_img=300),
        rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=50),
        rcnn=dict(score_thr=0.05, max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[int(0.8 * max_iters)], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=False))
log_processor = dict(by_epoch=False)
