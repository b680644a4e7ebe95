# Toy-world linear semantic segmentation on FROZEN features: DINOv2's "linear" ADE20K protocol at toy scale
# (benchmarks/toydata.py: 96 px ADEChallengeData2016-layout scenes, 9 classes from classes.json):
#   - any exported backbone (ExportedBackbone: architecture from the weights' sidecar), frozen, its last three
#     levels (ResNet-18 layer2-4 at strides 8/16/32; vit_tiny blocks 1-3 at stride 16);
#   - BNHead: levels resized to the first one's size and concatenated, BatchNorm, 1x1 conv; logits upsampled
#     (bilinear) to the label size; cross-entropy;
#   - no augmentation, so every image's features are computed once and cached (cache=True): a run costs one
#     backbone pass per image plus the head's iterations;
#   - AdamW, warm-up + poly, batch 16; mIoU over every val image at the end.
# A toy protocol (recipe toy_linear_seg, dataset toy_ade): never set beside a published number.
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['transfer.mmseg.models'], allow_failed_imports=False)

benchmark = dict(dataset='toy_ade', protocol='toy_linear_seg')
classes_json = 'classes.json'
num_classes = 9
image_size = 96
crop_size = (image_size, image_size)
max_iters = 300
data_root = 'data/toy/ade/ADEChallengeData2016'

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(type='ExportedBackbone', out_indices=(-3, -2, -1), img_size=image_size, frozen=True, cache=True),
    decode_head=dict(type='BNHead', in_channels='from_backbone', in_index=[0, 1, 2], input_transform='resize_concat',
                     channels=1, dropout_ratio=0.0, num_classes=num_classes, norm_cfg=dict(type='SyncBN'),
                     align_corners=False, loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

dataset = dict(type='BaseSegDataset', data_root=data_root, img_suffix='.jpg', seg_map_suffix='.png',
               reduce_zero_label=True)
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(**dataset, pipeline=pipeline,
                                     data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(**dataset, pipeline=pipeline,
                                   data_prefix=dict(img_path='images/validation',
                                                    seg_map_path='annotations/validation')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=40),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=40, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=-1, save_last=False),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
