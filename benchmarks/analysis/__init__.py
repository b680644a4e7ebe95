"""Analysis tools: multi-order interaction strength of a classifier (interactions.py) and reconstruction /
Fourier-spectrum views of a pre-training checkpoint (reconstruct.py)."""
