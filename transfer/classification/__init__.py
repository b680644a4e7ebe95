"""ImageNet-1K fine-tuning and linear probing of exported backbones, on the suite's shared loop (pretrain/loop.py)."""
