# Toy-world Mask R-CNN with the project's vit_tiny (4 blocks x 96 dims, BEiT-style: rel-pos bias + abs pos +
# LayerScale; A2MIMViT) and a ViTDet simple feature pyramid (strides 4/8/16/32 + P6 from the stride-16 map of
# the last block), on the toy head/data/schedule of _toy_mask_rcnn.py. The 96 px input is a 6x6 patch grid
# (pos-embed / rel-pos tables resized from the pre-training size by the load gate). AdamW 2e-4, wd 0.05, layer
# decay 0.75 (the ViT-B config's recipe, smaller); CPU, ~1 min on 2 cores.
_base_ = ['./_toy_mask_rcnn.py']
model = dict(
    backbone=dict(_delete_=True, type='A2MIMViT', preset='vit_tiny', img_size={{_base_.image_size}},
                  out_indices=(3,), drop_path_rate=0.1, final_norm=False),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=96, out_channels={{_base_.ch}},
              scale_factors=(4.0, 2.0, 1.0, 0.5), num_outs=5, norm_cfg=dict(type='LN2d-timm')),
    rpn_head=dict(num_convs=2))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.75))
