# Mask R-CNN ConvNeXt-S FPN 3x on COCO (the ConvNeXt detection recipe, _mask_rcnn_convnext_fpn.py +
# _convnext_ms_crop_3x.py): weights exported from a ConvNeXt-S (convnext_small) run, drop path 0.6.
_base_ = ['./_convnext_ms_crop_3x.py']
benchmark = dict(protocol='maskrcnn-convnext-3x')   # result.json recipe id (benchmarks/reference.yaml)
model = dict(backbone=dict(drop_path=0.6))
