# UperNet ViT-B on ADE20K (spec §5; A²MIM's ADE20K ViT-B row: 49.0 mIoU): the weights' timm Beit through the
# backbone contract (ExportedBackbone, transfer/backbones.py) at 512x512 (pos-embed / rel-pos tables resized from 224 by the
# load gate), features of blocks 3/5/7/11 rescaled x4/x2/x1/x0.5 by mmseg's Feature2Pyramid, UPerHead
# (768 channels) + auxiliary FCN head (weight 0.4), SyncBN in neck/heads, drop path 0.1, no final norm.
# AdamW lr 1e-4, wd 0.05 (none on norms, biases, pos_embed, cls_token, rel-pos tables, LayerScale),
# layer-wise lr decay 0.65, 1500-iteration linear warm-up, poly (power 1) to 0, 160k iterations, batch 16
# (8 GPUs x 2), sliding-window test (512, stride 341). fp32 (the official run used fp16: add --amp).
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['transfer.mmseg.models'], allow_failed_imports=False)
benchmark = dict(protocol='upernet-160k')   # result.json protocol id (benchmarks/reference.yaml)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(_delete_=True, type='ExportedBackbone', img_size=512, out_indices=(3, 5, 7, 11), drop_path=0.1,
                  final_norm=False),
    neck=dict(embed_dim='from_backbone[-1]', rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels='from_backbone', channels=768, num_classes=150),
    auxiliary_head=dict(in_channels='from_backbone[2]', num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.65))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
