# Toy-world UperNet with ANY exported plain ViT (e.g. vit_tiny): features of its last four blocks rescaled
# x4/x2/x1/x0.5 by mmseg's Feature2Pyramid (as the ViT-B config, blocks 3/5/7/11), on the toy head/data/schedule of
# _toy_upernet.py. The backbone contract (ExportedBackbone) at 96 px: a 6x6 patch grid (pos-embed / rel-pos
# tables resized from the pre-training size by the load gate). AdamW, layer decay 0.75, warm-up + poly (the ViT-B
# recipe, with a toy lr).
_base_ = ['./_toy_upernet.py']
model = dict(
    backbone=dict(_delete_=True, type='ExportedBackbone', img_size={{_base_.image_size}},
                  out_indices=(-4, -3, -2, -1), drop_path=0.1, final_norm=False),
    neck=dict(type='Feature2Pyramid', embed_dim='from_backbone[-1]', rescales=[4, 2, 1, 0.5],
              norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels='from_backbone'),
    auxiliary_head=dict(in_channels='from_backbone[2]'))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.75))
