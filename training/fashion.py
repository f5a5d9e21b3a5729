"""fashion: a CNN image classifier on Fashion-MNIST, or on any folder of labelled images.

Convolutional blocks (Conv2D → BatchNorm → ReLU, once or twice, then max-pooling and dropout),
a dense head, Adam; augmentation by small shifts and horizontal flips; early stopping on the
validation loss, a best-weights checkpoint and learning-rate reduction on plateau.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from app.config import Settings
from app.preprocessing import prepare_image, shrunk_size
from app.preprocessing.images import decode_image
from app.store.layout import version_dir
from app.store.manifest import PLOTS_DIR
from training.classification import classification_report
from training.evaluation import load_stored, store_evaluation
from training.plots import plot_confusion_matrix, plot_history
from training.recording import TrainingRun
from training.sources import FASHION_MNIST, fetch
from training.spec import ModelSpec

NAME = "fashion"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
INPUT_SHAPE = [28, 28, 1]
VALIDATION_SIZE = 5_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
CONFUSION_PLOT = "confusion_matrix.png"

Splits = dict[str, tuple[np.ndarray, np.ndarray]]

# idx type codes → numpy big-endian dtypes (the format's own table)
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --- data ----------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip-compressed or not): two zero bytes, a type code, the number of dimensions,
    each dimension as a big-endian uint32, then the values in row-major order."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path.name}: not an idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path.name}: shape {shape} needs {expected} bytes of data, found {len(raw) - offset}")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def split_indices(labels: np.ndarray, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    """Train / validation / test indices from a fixed-seed shuffle of each class (stratified), the last
    two taking `fractions` of every class, so each split sees every class in its proportion."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val, n_test = (int(round(len(members) * f)) for f in fractions)
        parts[0].append(members[n_val + n_test :])
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
    return tuple(np.sort(np.concatenate(part)) for part in parts)


def load_fashion_mnist(settings: Settings, seed: int = 0) -> Splits:
    """60,000 training images (5,000 held out for validation, fixed seed) and the 10,000 test images."""
    folder = fetch(FASHION_MNIST, settings.DATA_DIR)
    x_train, y_train, x_test, y_test = (read_idx(folder / pinned.path) for pinned in FASHION_MNIST.files)
    to_input = lambda images: images.astype(np.float32)[..., None] / 255.0  # noqa: E731
    order = np.random.default_rng(seed).permutation(len(x_train))
    train, val = order[VALIDATION_SIZE:], order[:VALIDATION_SIZE]
    return {
        "train": (to_input(x_train[train]), y_train[train].astype(np.int64)),
        "validation": (to_input(x_train[val]), y_train[val].astype(np.int64)),
        "test": (to_input(x_test), y_test.astype(np.int64)),
    }


def list_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sub-folders, sorted) and every image file with its class index."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise SystemExit(f"{root}: needs at least two sub-folders, one per class (found {classes})")
    files = [
        (path, index)
        for index, name in enumerate(classes)
        for path in sorted((root / name).rglob("*"))
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]
    empty = [name for index, name in enumerate(classes) if not any(i == index for _, i in files)]
    if empty:
        raise SystemExit(f"{root}: no images in class folder(s) {empty} (accepted: {', '.join(IMAGE_SUFFIXES)})")
    return classes, files


def folder_preprocessing(size: int, colour_mode: str) -> dict[str, Any]:
    """How a folder-trained model's images are prepared: in training, and in its manifest for serving."""
    return {"kind": "resized", "size": size, "colour_mode": colour_mode}


def load_image_folder(
    root: Path, size: int, colour_mode: str, fractions: tuple[float, float], seed: int,
    max_pixels: int = 40_000_000,
) -> tuple[Splits, list[str], str]:
    """One sub-folder per class → train / validation / test splits, each image prepared exactly as the
    service will prepare an upload; also the class names and a fingerprint of the files."""
    classes, files = list_image_folder(root)
    preprocessing = folder_preprocessing(size, colour_mode)  # each image decoded and prepared as an upload is
    shrinks_to = shrunk_size(preprocessing)
    images, labels, digest = [], [], hashlib.sha256()
    for path, label in files:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root)}:{label}:".encode() + hashlib.sha256(data).digest())
        images.append(prepare_image(decode_image(data, max_pixels, str(path), shrinks_to), preprocessing))
        labels.append(label)
    x, y = np.stack(images), np.asarray(labels, dtype=np.int64)
    train, val, test = split_indices(y, fractions, seed)
    if min(len(train), len(val), len(test)) == 0:
        raise SystemExit(f"{root}: {len(x)} images are too few for a train / validation / test split")
    splits = {"train": (x[train], y[train]), "validation": (x[val], y[val]), "test": (x[test], y[test])}
    return splits, classes, digest.hexdigest()[:16]


# --- the network ---------------------------------------------------------------------------

def conv_block(x, filters: int, dropout: float, convolutions: int = 2):
    for _ in range(convolutions):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    return layers.Dropout(dropout)(x)


def build_model(input_shape: list[int], num_classes: int, width: int = 32, convolutions: tuple[int, ...] = (1, 2, 2),
                dense_units: int = 256, dropout: float = 0.2) -> keras.Model:
    """Blocks of width, 2·width, 4·width, ... channels (`convolutions[i]` convolutions in block i);
    dropout grows with depth; a dense head. The softmax stays float32 under mixed precision."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for depth, count in enumerate(convolutions):
        last = depth == len(convolutions) - 1
        x = conv_block(x, width * 2**depth, dropout + (0.1 if last else 0.0), count)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.4)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=NAME)


def float32_copy(model: keras.Model, build) -> keras.Model:
    """The same weights in a float32 model: what is shipped, whatever precision trained it."""
    keras.mixed_precision.set_global_policy("float32")
    copy = build()
    copy.set_weights(model.get_weights())
    return copy


def flip_averaged(model: keras.Model, input_shape: list[int]) -> keras.Model:
    """The mean of the predictions on an image and on its mirror image, as one saved model.

    The model was trained on mirrored images too, so both views are equally valid inputs and their
    average is steadier than either. The mirror is a frozen Dense layer acting on the width axis
    (an anti-diagonal identity), so the saved model holds only built-in layers.
    """
    width = input_shape[1]
    inputs = keras.Input(shape=input_shape)
    mirror = layers.Dense(width, use_bias=False, trainable=False, name="mirror_columns")
    columns_last = layers.Permute((1, 3, 2))(inputs)  # (height, channels, width)
    mirrored = layers.Permute((1, 3, 2))(mirror(columns_last))
    mirror.set_weights([np.eye(width, dtype=np.float32)[::-1]])
    outputs = layers.Average(name="flip_average")([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=model.name)


def augmented_batches(x: np.ndarray, y: np.ndarray, batch_size: int, max_shift: int, flip: bool,
                      seed: int) -> tf.data.Dataset:
    """Shuffled batches, shifted by up to `max_shift` pixels and mirrored left-right: clothes are
    left-right symmetric and never centred exactly. The saved model stays free of these layers."""
    augment = []
    if flip:
        augment.append(layers.RandomFlip("horizontal", seed=seed))
    if max_shift:
        height, width = x.shape[1:3]
        augment.append(layers.RandomTranslation(max_shift / height, max_shift / width, fill_mode="constant",
                                                interpolation="nearest", seed=seed))
    pipeline = keras.Sequential(augment)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(batch_size)
    if augment:
        dataset = dataset.map(lambda images, labels: (pipeline(images, training=True), labels),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def training_callbacks(run: TrainingRun, args: argparse.Namespace, best_weights: Path) -> list[keras.callbacks.Callback]:
    """Stop when the validation loss stalls, keep the best weights, halve the rate on plateaus."""
    earlier = [row["val_loss"] for row in run.history() if "val_loss" in row]  # a resumed run keeps its best
    return [
        keras.callbacks.ModelCheckpoint(str(best_weights), monitor="val_loss", save_best_only=True,
                                        save_weights_only=True, initial_value_threshold=min(earlier, default=None)),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=args.plateau_patience,
                                          min_lr=1e-5),
        *run.callbacks(),
    ]


# --- training ------------------------------------------------------------------------------

def record_resumed_params(run: TrainingRun, params: dict[str, Any]) -> None:
    """A run resumed with other flags records them, and what they replaced, in its parameters."""
    earlier = run.recorded_params()
    changed = {k: [earlier.get(k), v] for k, v in params.items() if k != "resumed_with" and earlier.get(k) != v}
    if changed:
        history = [*earlier.get("resumed_with", []), {"after_epoch": len(run.history()), "changed": changed}]
        run.update(params={**earlier, **params, "resumed_with": history})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Train on a folder of images, one sub-folder per class, instead of Fashion-MNIST.")
    parser.add_argument("--name", default=NAME, help="Store name of the trained model (default: fashion).")
    parser.add_argument("--image-size", type=int, default=64, help="Folder images are resized to this square.")
    parser.add_argument("--colour-mode", choices=("rgb", "grayscale"), default="rgb", help="For folder images.")
    parser.add_argument("--validation-fraction", type=float, default=0.15, help="Of a folder dataset.")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="Of a folder dataset.")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=32, help="Channels of the first block (doubled per block).")
    parser.add_argument("--convolutions", default="2,2,2",
                        help="Convolutions per block, comma-separated (one block per number).")
    parser.add_argument("--dense-units", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.2, help="After each block (+0.1 after the last).")
    parser.add_argument("--bf16", action="store_true",
                        help="Train in mixed bfloat16 (about 2x faster on CPUs with AVX-512 BF16); ships float32.")
    parser.add_argument("--label-smoothing", type=float, default=0.05)
    parser.add_argument("--max-shift", type=int, default=2, help="Random shift augmentation, pixels.")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="No horizontal flips.")
    parser.add_argument("--flip-average", action="store_true",
                        help="Ship the average over each image and its mirror: twice the compute per image "
                             "(Fashion-MNIST: 94.18 %% instead of 94.10 %%).")
    parser.add_argument("--single-view-of", type=int, default=None, metavar="VERSION",
                        help="Instead of training: publish the single network inside a stored flip-averaged "
                             "version as a new version, evaluated and recorded as a run of its own.")
    parser.add_argument("--patience", type=int, default=8, help="Early stopping, epochs without a better val loss.")
    parser.add_argument("--plateau-patience", type=int, default=2, help="Epochs before halving the learning rate.")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N training images.")


def train_on(
    data: Splits, labels: list[str], args: argparse.Namespace, settings: Settings, *,
    dataset: str | None = None, data_fingerprint: str | None = None, preprocessing: dict[str, Any],
    description: str,
) -> int:
    """Train on already-loaded splits, evaluate on the test split, record the run, publish a version."""
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("command", "model", "resume", "quiet")}
    (x_train, y_train), validation, (x_test, y_test) = data["train"], data["validation"], data["test"]
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    source = None if dataset else FASHION_MNIST
    input_shape = list(x_train.shape[1:])
    with TrainingRun(args.name, settings, params=params, seed=args.seed, source=source, dataset=dataset,
                     data_fingerprint=data_fingerprint, resume=args.resume) as run:
        if args.resume:
            record_resumed_params(run, params)
        convolutions = tuple(int(n) for n in str(args.convolutions).split(","))
        build = lambda: build_model(input_shape, len(labels), args.width, convolutions,  # noqa: E731
                                    args.dense_units, args.dropout)
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.bf16 else "float32")
        model = build()
        model.compile(
            optimizer=keras.optimizers.Adam(args.learning_rate),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
            metrics=["accuracy"],
        )
        one_hot = lambda y: keras.utils.to_categorical(y, len(labels))  # noqa: E731  (label smoothing needs it)
        # a resumed session draws new shuffles and shifts rather than replaying the first epochs' ones
        data_seed = args.seed + len(run.history())
        batches = augmented_batches(x_train, one_hot(y_train), args.batch_size, args.max_shift, args.flip, data_seed)
        best_weights = run.checkpoint_dir / "best.weights.h5"
        started = time.monotonic()
        model.fit(batches, validation_data=(validation[0], one_hot(validation[1])), epochs=args.epochs,
                  callbacks=training_callbacks(run, args, best_weights), verbose=2 if args.quiet else 1)
        fit_seconds = time.monotonic() - started
        if best_weights.is_file():
            model.load_weights(best_weights)
        model = float32_copy(model, build)
        single_view = model.predict(x_test, batch_size=512, verbose=0)
        probabilities = single_view
        if args.flip_average:  # trained on mirror images: the average over both views
            model = flip_averaged(model, input_shape)
            probabilities = model.predict(x_test, batch_size=512, verbose=0)
        metrics = classification_report(y_test, probabilities, labels)
        metrics["test_accuracy_single_view"] = float((single_view.argmax(axis=1) == y_test).mean())
        metrics["fit_seconds_this_session"] = round(fit_seconds, 1)
        plot_history(run.history(), run.plots_dir / "loss.png", title=f"{args.name}: loss per epoch")
        plot_history(run.history(), run.plots_dir / "accuracy.png", metric="accuracy",
                     title=f"{args.name}: accuracy per epoch")
        plot_confusion_matrix(metrics["confusion_matrix"], labels, run.plots_dir / CONFUSION_PLOT,
                              title=f"{args.name}: confusion matrix, test set")
        return run.publish(model, task="classify", input_shape=input_shape, labels=labels, test_metrics=metrics,
                           preprocessing=preprocessing, description=description)


def single_view(model: keras.Model) -> keras.Model:
    """The network inside a `flip_averaged` model (the model itself when it is not one)."""
    if not any(layer.name == "flip_average" for layer in model.layers):
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def publish_single_view(args: argparse.Namespace, settings: Settings) -> int:
    """A stored flip-averaged version's own network as a new version: half the compute per image.

    No weights change; the run records where they came from and the test metrics of the one view.
    """
    stored, manifest = load_stored(settings, args.name, args.single_view_of)
    if manifest.preprocessing.get("kind") != "fashion_item":
        raise SystemExit(f"{args.name} version {manifest.version} is not a Fashion-MNIST model; "
                         "--single-view-of tests on the Fashion-MNIST test set")
    model = single_view(stored)
    if model is stored:
        raise SystemExit(f"{args.name} version {manifest.version} is already a single view")
    x_test, y_test = load_fashion_mnist(settings)["test"]
    params = {"single_view_of": manifest.version, "weights_from_run": manifest.run_id}
    with TrainingRun(args.name, settings, params=params, seed=args.seed, source=FASHION_MNIST) as run:
        metrics = classification_report(y_test, model.predict(x_test, batch_size=512, verbose=0), manifest.labels)
        metrics["flip_averaged_test_accuracy"] = (manifest.test_metrics or {}).get("test_accuracy")
        plot_confusion_matrix(metrics["confusion_matrix"], manifest.labels, run.plots_dir / CONFUSION_PLOT,
                              title=f"{args.name}: confusion matrix, test set")
        return run.publish(model, task="classify", input_shape=list(manifest.input_spec.shape), labels=manifest.labels,
                           test_metrics=metrics, preprocessing=manifest.preprocessing,
                           description=f"{manifest.description} One view per image (the network of version "
                                       f"{manifest.version} without its mirror-image average).")


def train(args: argparse.Namespace, settings: Settings) -> int:
    if args.flip_average and not args.flip:
        raise SystemExit("--flip-average needs training on mirror images too: drop --no-flip")
    if args.single_view_of is not None:
        return publish_single_view(args, settings)
    if args.data_dir is None:
        return train_on(
            load_fashion_mnist(settings, args.seed), LABELS, args, settings,
            preprocessing={"kind": "fashion_item"},
            description="CNN on Fashion-MNIST: Conv-BN-ReLU blocks of 32-64-128 channels, dense head, Adam; "
                        "trained with shifts and flips.",
        )
    root = args.data_dir.expanduser().resolve()
    fractions = (args.validation_fraction, args.test_fraction)
    data, classes, digest = load_image_folder(root, args.image_size, args.colour_mode, fractions, args.seed,
                                              settings.MAX_IMAGE_PIXELS)
    print(f"{root}: {len(classes)} classes, " + ", ".join(f"{k} {len(v[1])}" for k, v in data.items()))
    return train_on(
        data, classes, args, settings, dataset=f"folder:{root.name}", data_fingerprint=digest,
        preprocessing=folder_preprocessing(args.image_size, args.colour_mode),
        description=f"CNN on the image folder {root.name}: Conv-BN-ReLU blocks, dense head, Adam.",
    )


# --- evaluation ----------------------------------------------------------------------------

def evaluate(settings: Settings, version: int | None) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / F1, macro F1 and the confusion matrix (PNG with the
    run) of the served Fashion-MNIST version, on the 10,000 test images."""
    model, manifest = load_stored(settings, NAME, version)
    x_test, y_test = load_fashion_mnist(settings)["test"]
    probabilities = model.predict(x_test, batch_size=512, verbose=0)
    report = classification_report(y_test, probabilities, manifest.labels)
    plots = version_dir(settings.MODEL_DIR, NAME, manifest.version) / PLOTS_DIR
    plot_confusion_matrix(report["confusion_matrix"], manifest.labels, plots / CONFUSION_PLOT,
                          title=f"{NAME}: confusion matrix, test set")  # as in training: same bytes
    metrics = {"model": NAME, "version": manifest.version, **report,
               "confusion_matrix_url": f"/runs/{manifest.run_id}/plots/{CONFUSION_PLOT}"}
    store_evaluation(settings, manifest, metrics)
    return metrics


SPEC = ModelSpec(
    name=NAME,
    summary="CNN image classifier on Fashion-MNIST, or on a folder of images (--data-dir).",
    sources=(FASHION_MNIST,),
    add_arguments=add_arguments,
    train=train,
    evaluate=evaluate,
)
