"""The digits network written once per framework, measured side by side (`python -m benchmarks.frameworks`).

Each implementation is one small module exposing `Net(weights, seed)` with `train_step(x, y, lr) -> loss`
and `predict(x) -> probabilities`; `harness.py` measures one of them in its own process, `__main__.py`
runs them all and writes the table into docs/frameworks.md.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Implementation:
    name: str
    title: str
    module: str  # a module of this package exposing `Net`
    needs: tuple[str, ...]  # importable top-level modules
    env: dict[str, str] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """The modules this implementation needs that are not installed here."""
        return [module for module in self.needs if importlib.util.find_spec(module) is None]


IMPLEMENTATIONS = {
    impl.name: impl
    for impl in (
        Implementation("keras-tensorflow", "Keras 3 on TensorFlow", "keras_model", ("keras", "tensorflow"),
                       {"KERAS_BACKEND": "tensorflow"}),
        Implementation("keras-jax", "Keras 3 on JAX", "keras_model", ("keras", "jax"), {"KERAS_BACKEND": "jax"}),
        Implementation("keras-torch", "Keras 3 on PyTorch", "keras_model", ("keras", "torch"),
                       {"KERAS_BACKEND": "torch"}),
        Implementation("tensorflow", "TensorFlow (GradientTape + tf.function)", "tf_plain", ("tensorflow",)),
        Implementation("torch", "PyTorch (eager)", "torch_plain", ("torch",)),
        Implementation("pytensor", "PyTensor (compiled graph)", "pytensor_plain", ("pytensor",)),
    )
}
