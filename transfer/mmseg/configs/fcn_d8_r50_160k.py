# FCN-D8 R50 on ADE20K, 160k (spec §5; likely the head of A²MIM's ADE20K R50 row, 38.3 mIoU): dilated
# ResNet-50 (strides 1/2/1/1, dilations 1/1/2/4), FCN head (2 convs + concat input), aux FCN 0.4, SyncBN,
# SGD lr 0.01, poly, batch 16, 512 crops — mmseg's recipe with the PLAIN ResNet stem (type='ResNet')
# instead of ResNetV1c, so the pre-trained stem loads. Weights via train.py --weights (load gate).
_base_ = ['mmseg::fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['transfer.mmseg.models'], allow_failed_imports=False)
benchmark = dict(protocol='fcn-d8-160k')   # result.json protocol id (benchmarks/reference.yaml)

model = dict(pretrained=None, backbone=dict(type='ResNet', init_cfg=None))
