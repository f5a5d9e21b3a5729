"""PyTorch: modules run eagerly, autograd records each operation as it happens (define-by-run),
and torch.optim applies the update."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmarks.frameworks.common import CLASSES, DROPOUT, HIDDEN_UNITS, MOMENTUM, PIXELS


class Net:
    def __init__(self, weights: dict[str, np.ndarray], seed: int) -> None:
        torch.manual_seed(seed)
        self.model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(PIXELS, HIDDEN_UNITS),
            nn.ReLU(),
            nn.Dropout(DROPOUT),
            nn.Linear(HIDDEN_UNITS, CLASSES),  # logits: cross_entropy applies the softmax
        )
        with torch.no_grad():  # nn.Linear keeps its kernel as (out, in): transpose
            for layer, w, b in ((self.model[1], "w1", "b1"), (self.model[4], "w2", "b2")):
                layer.weight.copy_(torch.from_numpy(weights[w].T))
                layer.bias.copy_(torch.from_numpy(weights[b]))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.0, momentum=MOMENTUM, nesterov=True)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad()
        loss = nn.functional.cross_entropy(self.model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        return torch.softmax(self.model(torch.from_numpy(x)), dim=1).numpy()
