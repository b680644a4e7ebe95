# Toy-world Mask R-CNN R18-FPN (CPU, ~1 min on 2 cores): the toy head/data/schedule of _toy_mask_rcnn.py on a
# ResNet-18 (pytorch style, all stages trainable, BN in train mode as in the R50-FPN protocol).
# `python -m transfer.mmdet.train THIS --weights W --data-root TOY/coco --work-dir D`
# (a smoke run: add `--tiny 64 --iters 2`).
_base_ = ['./_toy_mask_rcnn.py']
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_cfg={{_base_.norm_cfg}}, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], norm_cfg={{_base_.norm_cfg}}))
