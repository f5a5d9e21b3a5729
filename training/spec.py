"""What a model module declares so the CLI, the store and the service can find it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from training.sources import Source


@dataclass(frozen=True)
class ModelSpec:
    """One model: its data, how to train it, and how to evaluate the version the store serves.

    Args:
        name: the store folder and the `model=` the service answers to.
        summary: one line for `python -m training --help`.
        sources: the datasets and weight files it reads (see `training.sources`).
        add_arguments: adds the model's hyperparameter flags to its sub-command.
        train: trains, records the run, publishes a version; returns the version number.
        evaluate: scores a stored version (None: the served one) and returns its metrics.
    """

    name: str
    summary: str
    sources: tuple[Source, ...]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    train: Callable[[argparse.Namespace, Settings], int]
    evaluate: Callable[[Settings, int | None], dict[str, Any]]
