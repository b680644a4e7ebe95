# Multi-scale COCO training of the MoCo detection protocol (spec §5): short side 640-800 step 32, long side
# <= 1333, horizontal flip; test at 800 (the mmdet base test pipeline). Inherited by the R50 C4/FPN configs.
_base_ = ['mmdet::_base_/datasets/coco_instance.py']

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(1333, s) for s in range(640, 801, 32)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
