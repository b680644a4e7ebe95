"""mmseg parts of the suite, registered on import (configs list this module in `custom_imports`): the ViT
backbone and the layer-decay optimizer constructor of transfer.openmmlab_models. The pyramid is mmseg's own
Feature2Pyramid neck."""
from transfer.openmmlab_models import register

register("mmseg")
