# UperNet ConvNeXt-T on ADE20K, 160k (the ConvNeXt segmentation recipe, _upernet_convnext_160k.py): weights
# exported from a ConvNeXt-T (convnext_tiny) run, drop path 0.4.
_base_ = ['./_upernet_convnext_160k.py']
model = dict(backbone=dict(drop_path=0.4))
