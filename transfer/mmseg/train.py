"""python -m transfer.mmseg.train CONFIG --weights EXPORTED [--work-dir D] [--data-root R] [--cfg-options ...]
[--launcher none|pytorch|slurm] [--tiny [SIZE]]: semantic segmentation on ADE20K -> result.json (mIoU, aAcc in %)."""
from __future__ import annotations

import sys

from transfer.openmmlab_common import Framework, cli, run

MMSEG = Framework(
    name="mmseg", task="ade20k_semseg", dataset="ade20k",
    layout="the ADEChallengeData2016 layout: images/training/*.jpg, images/validation/*.jpg, "
           "annotations/training/*.png, annotations/validation/*.png (uint8 labels, 0 = ignore)",
    metrics={"mIoU": ("mIoU", 1.0), "aAcc": ("aAcc", 1.0)},     # IoUMetric already reports percent
    root_subdir="ADEChallengeData2016")


def main(argv=None) -> dict:
    return run(MMSEG, argv)


if __name__ == "__main__":
    sys.exit(cli(MMSEG, sys.argv[1:]))
