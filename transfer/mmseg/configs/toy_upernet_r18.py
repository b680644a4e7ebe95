# Toy-world UperNet R18 (CPU, ~1 min on 2 cores): the toy head/data/schedule of _toy_upernet.py on a ResNet-18
# with the PLAIN stem (type='ResNet', as the pre-trained torchvision-layout backbone), strides 4-32, BN in train
# mode; SGD 0.01, poly (mmseg's ADE20K recipe).
# `python -m transfer.mmseg.train THIS --weights W --data-root TOY/ade --work-dir D` (smoke run: `--tiny 64`).
_base_ = ['./_toy_upernet.py']
model = dict(
    backbone=dict(type='ResNet', depth=18, init_cfg=None),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
