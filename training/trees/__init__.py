"""trees: a tree-crown detector by transfer learning from the EfficientNet-Lite0 ImageNet port."""

from __future__ import annotations

from training.sources import EFFICIENTNET_LITE0, NEON_TREES
from training.spec import ModelSpec
from training.trees.pipeline import NAME, add_arguments, evaluate, train

SPEC = ModelSpec(
    name=NAME,
    summary="Tree-crown detector: EfficientNet-Lite0 backbone (frozen, then fine-tuned) + CenterNet head.",
    sources=(EFFICIENTNET_LITE0, NEON_TREES),
    add_arguments=add_arguments,
    train=train,
    evaluate=evaluate,
)
