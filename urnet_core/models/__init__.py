"""Neural network parts: backbones (encoder + head) and the bag attention branch (section 4.4).

The confidence model of section 4.3 lives in :mod:`urnet_core.models.confidence`.
"""

from urnet_core.models.backbones import MODEL_NAMES, Backbone, build_model, load_weights
from urnet_core.models.bag import BagAttentionBranch, BagBatchSampler

__all__ = ["MODEL_NAMES", "Backbone", "build_model", "load_weights", "BagAttentionBranch", "BagBatchSampler"]
