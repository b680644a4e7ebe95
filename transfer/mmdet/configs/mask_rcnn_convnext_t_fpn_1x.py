# Mask R-CNN ConvNeXt-T FPN 1x on COCO (the ConvNeXt paper's 1x setting, _mask_rcnn_convnext_fpn.py): single scale
# (1333 x 800), flip, 12 epochs, lr x0.1 at 8 and 11 (mmdet's schedule_1x), drop path 0.4. Other sizes:
# --cfg-options model.backbone.drop_path=0.6 (S) / 0.7 (B), which marks the run '+cfg-options'.
_base_ = ['./_mask_rcnn_convnext_fpn.py']
benchmark = dict(protocol='maskrcnn-convnext-1x')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
