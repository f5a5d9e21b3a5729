"""digits: a feedforward network on MNIST (Flatten → Dense ReLU → Dropout → Dense softmax), SGD."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from app.config import Settings
from training.evaluation import load_stored, store_evaluation
from training.plots import plot_history
from training.recording import TrainingRun
from training.sources import MNIST, fetch
from training.spec import ModelSpec

NAME = "digits"
LABELS = [str(digit) for digit in range(10)]
INPUT_SHAPE = [28, 28]
VALIDATION_SIZE = 5_000


def read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A header row, then label + 784 pixels (0-255) per row → images in [0, 1] and labels."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.uint8)
    return table[:, 1:].reshape(-1, 28, 28).astype(np.float32) / 255.0, table[:, 0].astype(np.int64)


def load_mnist(settings: Settings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train / validation / test; parsed once, then cached as .npz beside the CSVs."""
    folder = fetch(MNIST, settings.DATA_DIR)
    cache = folder / "mnist.npz"
    if not cache.is_file():
        x_train, y_train = read_mnist_csv(folder / MNIST.files[0].path)
        x_test, y_test = read_mnist_csv(folder / MNIST.files[1].path)
        np.savez(cache, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = np.load(cache)
    x, y = data["x_train"], data["y_train"]
    return {
        "train": (x[:-VALIDATION_SIZE], y[:-VALIDATION_SIZE]),
        "validation": (x[-VALIDATION_SIZE:], y[-VALIDATION_SIZE:]),
        "test": (data["x_test"], data["y_test"]),
    }


def build_model(hidden_units: int = 1024, dropout: float = 0.3) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Flatten(),
            layers.Dense(hidden_units, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(len(LABELS), activation="softmax"),
        ],
        name=NAME,
    )


def shifted_batches(x: np.ndarray, y: np.ndarray, batch_size: int, max_shift: int, seed: int) -> tf.data.Dataset:
    """Shuffled batches, each image moved by up to `max_shift` pixels: handwriting is never centred
    exactly, and the shifts keep the single hidden layer from memorising pixel positions."""
    factor = max_shift / INPUT_SHAPE[0]
    shift = layers.RandomTranslation(factor, factor, fill_mode="constant", interpolation="nearest", seed=seed)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(batch_size)
    if max_shift:
        dataset = dataset.map(lambda images, labels: (shift(images[..., None], training=True)[..., 0], labels),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def compile_model(model: keras.Model, learning_rate: float, momentum: float, decay_steps: int) -> None:
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps, alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, nesterov=True),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-units", type=int, default=1024)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--max-shift", type=int, default=2, help="Random shift augmentation, pixels.")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N training images.")


def train_on(
    data: dict[str, tuple[np.ndarray, np.ndarray]], args: argparse.Namespace, settings: Settings,
    dataset: str | None = None, data_fingerprint: str | None = None,
) -> int:
    """Train on already-loaded splits, record the run, publish a version."""
    params = {k: v for k, v in vars(args).items() if k not in ("command", "model", "resume")}
    (x_train, y_train), validation, (x_test, y_test) = data["train"], data["validation"], data["test"]
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    source = None if dataset else MNIST
    with TrainingRun(NAME, settings, params=params, seed=args.seed, source=source, dataset=dataset,
                     data_fingerprint=data_fingerprint, resume=args.resume) as run:
        model = build_model(args.hidden_units, args.dropout)
        steps = args.epochs * int(np.ceil(len(x_train) / args.batch_size))
        compile_model(model, args.learning_rate, args.momentum, steps)
        batches = shifted_batches(x_train, y_train, args.batch_size, args.max_shift, args.seed)
        model.fit(batches, validation_data=validation, epochs=args.epochs,
                  callbacks=run.callbacks(), verbose=2 if args.quiet else 1)
        loss, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
        plot_history(run.history(), run.plots_dir / "loss.png", title="digits: loss per epoch")
        metrics = {"test_accuracy": float(accuracy), "test_loss": float(loss), "test_size": len(x_test)}
        return run.publish(
            model, task="classify", input_shape=INPUT_SHAPE, labels=LABELS, test_metrics=metrics,
            preprocessing={"kind": "mnist_digit"},
            description="Feedforward network on MNIST: Flatten, Dense 1024 ReLU, Dropout, softmax; SGD with momentum.",
        )


def train(args: argparse.Namespace, settings: Settings) -> int:
    return train_on(load_mnist(settings), args, settings)


def evaluate(settings: Settings, version: int | None) -> dict[str, Any]:
    model, manifest = load_stored(settings, NAME, version)
    x_test, y_test = load_mnist(settings)["test"]
    probabilities = model(x_test, training=False).numpy()
    metrics = {
        "model": NAME, "version": manifest.version,
        "test_accuracy": float((probabilities.argmax(axis=1) == y_test).mean()), "test_size": len(y_test),
    }
    store_evaluation(settings, manifest, metrics)
    return metrics


SPEC = ModelSpec(
    name=NAME,
    summary="Feedforward network on MNIST digits (SGD).",
    sources=(MNIST,),
    add_arguments=add_arguments,
    train=train,
    evaluate=evaluate,
)
