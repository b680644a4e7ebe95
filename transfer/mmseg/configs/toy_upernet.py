# Toy-world UperNet on ANY exported CNN (CPU): the toy head/data/schedule of _toy_upernet.py on the backbone
# contract (ExportedBackbone: the architecture comes from the weights' sidecar - ResNet, ConvNeXt, any timm CNN),
# its last four stages (strides 4-32), BN in train mode; SGD 0.01, poly (mmseg's ADE20K recipe).
# `python -m transfer.mmseg.train THIS --weights W --data-root TOY/ade --work-dir D` (smoke run: `--tiny 64`).
_base_ = ['./_toy_upernet.py']
model = dict(
    backbone=dict(_delete_=True, type='ExportedBackbone', out_indices=(-4, -3, -2, -1)),
    decode_head=dict(in_channels='from_backbone'),
    auxiliary_head=dict(in_channels='from_backbone[2]'))
