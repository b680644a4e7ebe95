# Toy-world Mask R-CNN with FPN on ANY exported CNN (CPU): the toy head/data/schedule of _toy_mask_rcnn.py on the
# backbone contract (ExportedBackbone: the architecture comes from the weights' sidecar - ResNet, ConvNeXt, any timm
# CNN), its last four stages (strides 4-32) into mmdet's FPN; every stage trainable, BN in train mode.
# `python -m transfer.mmdet.train THIS --weights W --data-root TOY/coco --work-dir D` (a smoke run: `--tiny 64`).
_base_ = ['./_toy_mask_rcnn.py']
model = dict(
    backbone=dict(_delete_=True, type='ExportedBackbone', out_indices=(-4, -3, -2, -1)),
    neck=dict(in_channels='from_backbone', norm_cfg={{_base_.norm_cfg}}))
