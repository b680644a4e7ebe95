"""detectron2 transfer (upstream detectron2 >= 0.6, MoCo's COCO protocol).

convert.py   exported / official backbone -> detectron2 `.pkl` ({'model': {name: ndarray}, matching_heuristics})
gate.py      load a `.pkl` into a built model with DetectionCheckpointer, then the suite's load gate
modeling.py  Res5ROIHeadsExtraNorm, the ViT simple-feature-pyramid backbone, layer-wise lr decay
             (importing it registers both with detectron2's registries)
configs.py   r50_c4_1x, r50_c4_2x, r50_fpn_1x, vit_base_sfp on top of the installed model zoo
train.py     `python -m transfer.detectron2.train --config NAME --weights W --data-root COCO [opts]`
"""
