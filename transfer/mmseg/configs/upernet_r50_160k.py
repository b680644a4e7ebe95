# UperNet R50 on ADE20K, 160k (spec §5): mmseg's UperNet-R50 ADE20K recipe (512 crops, SGD lr 0.01, poly,
# batch 16 = 4 GPUs x 4, SyncBN, aux FCN 0.4) with the PLAIN ResNet stem (type='ResNet', one 7x7 conv)
# instead of mmseg's deep-stem ResNetV1c, so the pre-trained torchvision-layout stem loads. No
# `pretrained=`: train.py --weights loads the backbone through the load gate.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['transfer.mmseg.models'], allow_failed_imports=False)
benchmark = dict(protocol='upernet-160k')   # result.json protocol id (benchmarks/reference.yaml)

model = dict(pretrained=None, backbone=dict(type='ResNet', init_cfg=None))
