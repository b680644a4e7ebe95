# Shared part of the toy-world UperNet configs (benchmarks/toydata.py: 96 px ADEChallengeData2016-layout scenes,
# labels 0 = ignore, 1 = background, 2..9 = the 8 shapes; classes.json beside the folder). mmseg's UperNet ADE20K
# recipe made CPU-sized on purpose (a toy protocol, never compared with published numbers: benchmark.protocol='toy'):
#   - BaseSegDataset with metainfo + reduce_zero_label from the toy world's classes.json (`classes_json`, read by
#     transfer/mmseg/train.py; ADE20KDataset insists on its own 150 names): 9 classes
#   - 96 px crops of images resized x0.75-1.5 (as ADE's 0.5-2.0 jitter + 512 crops, scaled), flip, photometric
#     distortion; test on the whole 96 px image; IoUMetric mIoU over every val image, once, at the end
#   - UPerHead + auxiliary FCN head (weight 0.4) with 64 channels, BN; batch 4, `max_iters` iterations
#   - no checkpoints (a run takes about a minute on 2 cores; an interrupted one starts again)
# The backbone configs (toy_upernet.py: any CNN, toy_upernet_vit.py: any ViT) set backbone/neck/optimiser.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['transfer.mmseg.models'], allow_failed_imports=False)

benchmark = dict(dataset='toy_ade', protocol='toy')      # result.json fields (transfer/openmmlab_common.py)
classes_json = 'classes.json'
num_classes = 9
image_size = 96
crop_size = (image_size, image_size)
max_iters = 200
ch = 64
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    decode_head=dict(channels=ch, num_classes=num_classes),
    auxiliary_head=dict(channels=ch, num_classes=num_classes),
    test_cfg=dict(mode='whole'))

dataset = dict(type='BaseSegDataset', img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=50, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=-1, save_last=False),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
