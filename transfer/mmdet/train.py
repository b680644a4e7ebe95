"""python -m transfer.mmdet.train CONFIG --weights EXPORTED [--work-dir D] [--data-root R] [--cfg-options ...]
[--launcher none|pytorch|slurm] [--tiny [SIZE]] [--seed N]: Mask R-CNN on COCO 2017 (or the toy world) ->
result.json with task 'coco_det' (bbox_mAP, segm_mAP in %), dataset and protocol from the config's `benchmark`."""
from __future__ import annotations

import sys

from transfer.openmmlab_common import Framework, cli, run

MMDET = Framework(
    name="mmdet", task="coco_det", dataset="coco2017",
    layout="the COCO 2017 layout: annotations/instances_train2017.json, annotations/instances_val2017.json, "
           "train2017/, val2017/",
    metrics={"bbox_mAP": ("coco/bbox_mAP", 100.0), "segm_mAP": ("coco/segm_mAP", 100.0)})


def main(argv=None) -> dict:
    return run(MMDET, argv)


if __name__ == "__main__":
    sys.exit(cli(MMDET, sys.argv[1:]))
