# Toy-world Mask R-CNN with ANY exported plain ViT (e.g. vit_tiny: 4 blocks x 96 dims, BEiT-style) and a ViTDet
# simple feature pyramid (strides 4/8/16/32 + P6 from the stride-16 map of the last block), on the toy
# head/data/schedule of _toy_mask_rcnn.py. The backbone contract (ExportedBackbone, architecture from the sidecar)
# at the 96 px input: a 6x6 patch grid (pos-embed / rel-pos tables resized from the pre-training size by the load
# gate), no final norm. AdamW 2e-4, wd 0.05, layer decay 0.75 (the ViT-B config's recipe, smaller).
_base_ = ['./_toy_mask_rcnn.py']
model = dict(
    backbone=dict(_delete_=True, type='ExportedBackbone', out_indices=(-1,), img_size={{_base_.image_size}},
                  drop_path=0.1, final_norm=False),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels='from_backbone[-1]', out_channels={{_base_.ch}},
              scale_factors=(4.0, 2.0, 1.0, 0.5), num_outs=5, norm_cfg=dict(type='LN2d-timm')),
    rpn_head=dict(num_convs=2))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.75))
