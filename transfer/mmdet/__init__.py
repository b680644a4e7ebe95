"""COCO instance segmentation transfer with mmdet 3.3 (configs/, models.py, train.py)."""
