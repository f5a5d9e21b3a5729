"""The one list of models. Adding a model: write its module with a `SPEC`, add it here."""

from __future__ import annotations

from training import digits, ecg, fashion, imagenet, trees, words
from training.spec import ModelSpec

MODELS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (digits.SPEC, fashion.SPEC, ecg.SPEC, words.SPEC, imagenet.SPEC, trees.SPEC)
}
