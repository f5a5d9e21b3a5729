"""ecg: an autoencoder on ECG5000 heartbeats; a reconstruction error over a threshold flags an anomaly.

Trained on normal beats (class 1) only, it rebuilds normal beats well and anomalous ones (classes
2-5) badly. The threshold is chosen on the validation split (never the test split) and shipped in
the manifest with the rule that produced it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from app.config import Settings
from app.preprocessing.records import (
    denormalise_records,
    fit_standardisation,
    normalise_records,
    reconstruction_errors,
)
from app.store.layout import version_dir
from app.store.manifest import PLOTS_DIR
from training.anomaly_plots import plot_error_histograms, plot_reconstructions, plot_threshold_sweep
from training.evaluation import load_stored, store_evaluation
from training.plots import plot_history
from training.recording import TrainingRun
from training.sources import ECG5000, fetch
from training.spec import ModelSpec
from training.thresholds import (
    MAX_VALIDATION_ACCURACY,
    binary_metrics,
    max_accuracy_threshold,
    normal_percentile_threshold,
    roc_auc,
    threshold_table,
)

NAME = "ecg"
NORMAL_CLASS = 1
RECORD_LENGTH = 140
SPLIT_FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}
SPLIT_SEED = 2024  # fixed apart from the training seed: every run sees the same test beats
TARGETS = {"roc_auc": 0.98, "accuracy": 0.97}
SWEEP_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)  # of the shipped threshold, for the report
THRESHOLD_RULE = (
    "the midpoint between consecutive validation reconstruction errors that gives the highest "
    "accuracy on the validation split (normal and anomalous beats); ties go to the middle one"
)

Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (records, classes)


# -- data ------------------------------------------------------------------------------------

def read_ucr_tsv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """UCR archive TSV: column 0 the class, then the series → (records float32, classes int)."""
    table = np.loadtxt(path, delimiter="\t", dtype=np.float64, ndmin=2)
    return table[:, 1:].astype(np.float32), table[:, 0].astype(np.int64)


def stratified_split(classes: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Indices per split with each class in the same proportions; the last split takes the remainder."""
    rng = np.random.default_rng(seed)
    names = list(fractions)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for value in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == value))
        start = 0
        for name in names[:-1]:
            count = int(round(fractions[name] * len(members)))
            parts[name].append(members[start : start + count])
            start += count
        parts[names[-1]].append(members[start:])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def load_ecg(settings: Settings) -> Splits:
    """Both ECG5000 files pooled (5,000 beats), split stratified by class with a fixed seed."""
    folder = fetch(ECG5000, settings.DATA_DIR)
    parts = [read_ucr_tsv(folder / pinned.path) for pinned in ECG5000.files]
    records = np.concatenate([part[0] for part in parts])
    classes = np.concatenate([part[1] for part in parts])
    indices = stratified_split(classes, SPLIT_FRACTIONS, SPLIT_SEED)
    return {name: (records[chosen], classes[chosen]) for name, chosen in indices.items()}


def is_anomalous(classes: np.ndarray) -> np.ndarray:
    return (np.asarray(classes) != NORMAL_CLASS).astype(np.int64)


# -- model -----------------------------------------------------------------------------------

def build_dense(length: int, units: list[int], latent: int) -> keras.Sequential:
    encoder = [layers.Dense(n, activation="relu", name=f"encode_{i}") for i, n in enumerate(units)]
    decoder = [layers.Dense(n, activation="relu", name=f"decode_{i}") for i, n in enumerate(reversed(units))]
    return keras.Sequential(
        [keras.Input(shape=(length,)), *encoder, layers.Dense(latent, activation="relu", name="bottleneck"),
         *decoder, layers.Dense(length, name="reconstruction")],
        name=NAME,
    )


def build_conv(length: int, filters: list[int], latent: int, kernel: int = 7) -> keras.Sequential:
    """Strided Conv1D encoder → Dense bottleneck → Conv1DTranspose decoder; `length` divisible by 2**len(filters)."""
    steps = length // 2 ** len(filters)
    if steps * 2 ** len(filters) != length:
        raise ValueError(f"record length {length} is not divisible by {2 ** len(filters)}")
    conv = dict(kernel_size=kernel, strides=2, padding="same", activation="relu")
    return keras.Sequential(
        [keras.Input(shape=(length,)), layers.Reshape((length, 1)),
         *[layers.Conv1D(n, **conv) for n in filters],
         layers.Flatten(), layers.Dense(latent, activation="relu", name="bottleneck"),
         layers.Dense(steps * filters[-1], activation="relu"), layers.Reshape((steps, filters[-1])),
         *[layers.Conv1DTranspose(n, **conv) for n in reversed(filters)],
         layers.Conv1D(1, kernel, padding="same", name="reconstruction"), layers.Reshape((length,))],
        name=NAME,
    )


def build_model(args: argparse.Namespace, length: int) -> keras.Sequential:
    if args.architecture == "conv":
        return build_conv(length, args.units, args.latent)
    return build_dense(length, args.units, args.latent)


# -- scoring ---------------------------------------------------------------------------------

def reconstruct(model: keras.Model, records: np.ndarray, preprocessing: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-record reconstruction errors, and the reconstructions in the records' own units."""
    inputs = normalise_records(records, preprocessing)
    outputs = model.predict(inputs, batch_size=1024, verbose=0)
    return reconstruction_errors(inputs, outputs), denormalise_records(outputs, preprocessing)


def detection_metrics(errors: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    metrics: dict[str, Any] = {"roc_auc": roc_auc(errors, labels), **binary_metrics(errors, labels, threshold)}
    metrics.update(threshold=threshold, test_size=len(labels), test_anomalous=int(np.sum(labels)))
    metrics["meets_target"] = all(metrics[key] >= value for key, value in TARGETS.items())
    return metrics


def draw_test_plots(
    records: np.ndarray, reconstructions: np.ndarray, errors: np.ndarray, labels: np.ndarray,
    threshold: float, folder: Path,
) -> None:
    plot_error_histograms(errors, labels, threshold, folder / "error_histogram.png",
                          title="ecg: test reconstruction errors, normal vs anomalous")
    plot_reconstructions(records, reconstructions, errors, labels, threshold, folder / "reconstructions.png")


# -- training --------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--architecture", choices=("dense", "conv"), default="dense")
    parser.add_argument("--units", type=int, nargs="+", default=[64, 32],
                        help="Dense units (dense) or Conv1D filters (conv) per encoder layer; the decoder mirrors them.")
    parser.add_argument("--latent", type=int, default=8, help="Bottleneck width.")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)


def train_on(data: Splits, args: argparse.Namespace, settings: Settings,
             dataset: str | None = None, data_fingerprint: str | None = None) -> int:
    """Train on the normal beats of already-loaded splits, pick the threshold on validation, publish."""
    params = {k: v for k, v in vars(args).items() if k not in ("command", "model", "resume")}
    params.update(split_fractions=SPLIT_FRACTIONS, split_seed=SPLIT_SEED, normal_class=NORMAL_CLASS)
    (x_train, c_train), (x_val, c_val), (x_test, c_test) = data["train"], data["validation"], data["test"]
    y_val, y_test = is_anomalous(c_val), is_anomalous(c_test)
    normal_train = x_train[c_train == NORMAL_CLASS]
    preprocessing = fit_standardisation(normal_train)
    source = None if dataset else ECG5000
    with TrainingRun(NAME, settings, params=params, seed=args.seed, source=source, dataset=dataset,
                     data_fingerprint=data_fingerprint, resume=args.resume) as run:
        model = build_model(args, x_train.shape[1])
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="mse", metrics=["mae"])
        train_inputs = normalise_records(normal_train, preprocessing)
        val_inputs = normalise_records(x_val[c_val == NORMAL_CLASS], preprocessing)
        model.fit(train_inputs, train_inputs, validation_data=(val_inputs, val_inputs), epochs=args.epochs,
                  batch_size=args.batch_size, shuffle=True, callbacks=run.callbacks(),
                  verbose=2 if args.quiet else 1)

        val_errors, _ = reconstruct(model, x_val, preprocessing)
        threshold = max_accuracy_threshold(val_errors, y_val)
        alternatives = {
            MAX_VALIDATION_ACCURACY: threshold,
            "normal_validation_p95": normal_percentile_threshold(val_errors, y_val, 95),
            "normal_validation_p99": normal_percentile_threshold(val_errors, y_val, 99),
        }
        test_errors, test_reconstructions = reconstruct(model, x_test, preprocessing)
        metrics = detection_metrics(test_errors, y_test, threshold)
        metrics["validation_roc_auc"] = roc_auc(val_errors, y_val)

        plot_history(run.history(), run.plots_dir / "loss.png", title="ecg: reconstruction loss (normal beats)")
        plot_threshold_sweep(val_errors, y_val, alternatives, run.plots_dir / "threshold_sweep.png",
                             title="ecg: validation metrics vs threshold")
        draw_test_plots(x_test, test_reconstructions, test_errors, y_test, threshold, run.plots_dir)
        return run.publish(
            model, task="anomaly", input_shape=[x_train.shape[1]], test_metrics=metrics,
            labels=["normal", "anomalous"], preprocessing=preprocessing,
            description=f"{args.architecture.capitalize()} autoencoder on ECG5000 normal beats; "
                        "reconstruction error (MSE) over the threshold flags an anomaly.",
            extra={
                "threshold": threshold,
                "threshold_rule": {"rule": MAX_VALIDATION_ACCURACY, "description": THRESHOLD_RULE},
                "error_metric": "mean squared error of the normalised record",
                "threshold_table": threshold_table((val_errors, y_val), (test_errors, y_test), alternatives),
            },
        )


def train(args: argparse.Namespace, settings: Settings) -> int:
    return train_on(load_ecg(settings), args, settings)


def evaluate(settings: Settings, version: int | None) -> dict[str, Any]:
    """Test-split metrics at the shipped threshold, and how they move with it (validation beside test).

    Redraws the test plots into the version's plots folder, where its run serves them.
    """
    model, manifest = load_stored(settings, NAME, version)
    splits = load_ecg(settings)
    records, labels = splits["test"][0], is_anomalous(splits["test"][1])
    val_records, val_labels = splits["validation"][0], is_anomalous(splits["validation"][1])
    threshold = float(manifest.model_extra["threshold"])
    errors, reconstructions = reconstruct(model, records, manifest.preprocessing)
    val_errors, _ = reconstruct(model, val_records, manifest.preprocessing)
    metrics = {"model": NAME, "version": manifest.version, **detection_metrics(errors, labels, threshold)}
    metrics["threshold_rule"] = manifest.model_extra.get("threshold_rule", {}).get("rule")
    metrics["threshold_sweep"] = threshold_table(
        (val_errors, val_labels), (errors, labels), {f"{m:g}x": m * threshold for m in SWEEP_MULTIPLES}
    )
    draw_test_plots(records, reconstructions, errors, labels, threshold,
                    version_dir(settings.MODEL_DIR, NAME, manifest.version) / PLOTS_DIR)
    store_evaluation(settings, manifest, metrics)
    return metrics


SPEC = ModelSpec(
    name=NAME,
    summary="Autoencoder on ECG5000 heartbeats; reconstruction error flags anomalies.",
    sources=(ECG5000,),
    add_arguments=add_arguments,
    train=train,
    evaluate=evaluate,
)
