# Mask R-CNN R50-FPN, 2x: the 1x model/data, 24 epochs, steps 16 and 23, 1000-iteration warm-up.
_base_ = ['./mask_rcnn_r50_fpn_1x.py']
benchmark = dict(protocol='maskrcnn-fpn-2x')

train_cfg = dict(max_epochs=24)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 23], gamma=0.1),
]
