"""PyTensor (Theano's continuation): declare symbolic inputs, build the graph of the loss, derive the
gradient graph symbolically, and compile both into C-backed functions before any data flows
(define-and-run)."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from benchmarks.frameworks.common import DROPOUT, MOMENTUM

pytensor.config.floatX = "float32"


class Net:
    def __init__(self, weights: dict[str, np.ndarray], seed: int) -> None:
        params = [pytensor.shared(weights[name], name=name) for name in ("w1", "b1", "w2", "b2")]
        velocity = [pytensor.shared(np.zeros_like(weights[name])) for name in ("w1", "b1", "w2", "b2")]
        w1, b1, w2, b2 = params
        x, y, lr = pt.tensor3("x", dtype="float32"), pt.lvector("y"), pt.scalar("lr", dtype="float32")
        rng = pt.random.shared_rng(seed=seed)
        rng_updates = {}  # the random generator is state too: each call must hand on its next state

        def logits(training: bool) -> pt.TensorVariable:
            hidden = pt.maximum(x.reshape((x.shape[0], 28 * 28)) @ w1 + b1, 0.0)
            if training:
                rng_updates[rng], keep = rng.bernoulli(1.0 - DROPOUT, size=hidden.shape)
                hidden = hidden * keep.astype("float32") / np.float32(1.0 - DROPOUT)
            return hidden @ w2 + b2

        log_probs = pt.special.log_softmax(logits(True), axis=1)
        loss = -log_probs[pt.arange(y.shape[0]), y].mean()
        updates = list(rng_updates.items())
        for param, v, grad in zip(params, velocity, pt.grad(loss, params), strict=True):
            new_v = MOMENTUM * v - lr * grad  # Nesterov momentum, as Keras's SGD
            updates += [(v, new_v), (param, param + MOMENTUM * new_v - lr * grad)]
        self._train = pytensor.function([x, y, lr], loss, updates=updates)
        self._predict = pytensor.function([x], pt.special.softmax(logits(False), axis=1))

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        return float(self._train(x, y, np.float32(lr)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predict(x)
