# The built-in toy world (benchmarks/toydata.py) on Mask R-CNN R18-FPN: the R50-FPN 1x protocol with ResNet-18
# channels, the toy's 8 shape classes (COCO ids 1,3,..,15, mapped by name), small images. CPU-sized; run with
# `python -m transfer.mmdet.train THIS --weights W --data-root TOY/coco --tiny 64 --iters N`.
_base_ = ['./mask_rcnn_r50_fpn_1x.py']
classes = ('circle', 'square', 'triangle', 'star', 'cross', 'ring', 'crescent', 'heart')
metainfo = dict(classes=classes)
model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(bbox_head=dict(num_classes=len(classes)), mask_head=dict(num_classes=len(classes))))
train_dataloader = dict(dataset=dict(metainfo=metainfo))
val_dataloader = dict(dataset=dict(metainfo=metainfo))
test_dataloader = val_dataloader
