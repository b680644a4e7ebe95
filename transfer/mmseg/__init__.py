"""ADE20K semantic segmentation transfer with mmsegmentation 1.2 (configs/, models.py, train.py)."""
