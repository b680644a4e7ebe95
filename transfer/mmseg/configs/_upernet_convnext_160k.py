# Shared part of the ConvNeXt UperNet configs: the ConvNeXt ADE20K recipe (mmseg 1.2's configs/convnext/
# convnext-*_upernet_8xb2-amp-160k_ade20k-512x512.py, whose ImageNet weights are replaced by an exported backbone):
# the backbone contract (ExportedBackbone: the weights' ConvNeXt from their sidecar), four stages with a new
# LayerNorm on each output, UPerHead (512 channels) + auxiliary FCN head on stage 2 (weight 0.4), SyncBN; AdamW
# lr 1e-4, wd 0.05, 'stage_wise' lr decay 0.9 (6 layers for T, 12 for S/B: the architecture's), 1500-iteration
# linear warm-up, poly (power 1) to 0, 160k iterations, batch 16 (8 GPUs x 2), 512 crops, sliding-window test
# (stride 341), AMP (--amp). Size configs set drop path (T 0.4, S 0.3, B 0.4, as mmseg's).
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['transfer.mmseg.models'], allow_failed_imports=False)
benchmark = dict(protocol='upernet-convnext-160k')
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(_delete_=True, type='ExportedBackbone', out_indices=(0, 1, 2, 3), drop_path=0.4, out_norms=True),
    decode_head=dict(in_channels='from_backbone', num_classes=150),
    auxiliary_head=dict(in_channels='from_backbone[2]', num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise'))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, begin=1500, end=160000, eta_min=0.0, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
