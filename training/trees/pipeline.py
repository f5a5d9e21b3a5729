"""trees: train (stage 1 frozen backbone, stage 2 fine-tuned top blocks), compare, evaluate, publish.

The frozen parts' outputs are computed once per tile and cached (the first fine-tuned block's input
for stage 2, the stride-8 and stride-16 maps for stage 1), so on a small CPU a stage costs only
what it trains.
The comparison trains the same head with the same budget on (a) the frozen ImageNet backbone,
(b) the fine-tuned ImageNet backbone (shipped), (c) a randomly initialised backbone (same two
stages as b).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from app.config import Settings
from app.detection.centernet import encode
from app.detection.tiled import TILES_PER_CALL, detections_from_outputs, normalise, tile_as_manifest
from app.detection.views import averaged_views, view_count, with_mirrors
from app.preprocessing.colours import colour_reference
from app.serving.runtime import run_in_pieces
from training.efficientnet_lite import blocks
from training.evaluation import load_stored, store_evaluation
from training.imagenet import load_weights_file
from training.recording import TrainingRun
from training.sources import NEON_TREES, fetch
from training.torch_checkpoint import read_state_dict
from training.trees.ap import bootstrap_ap, evaluate_images, pooled_ap, precision_recall
from training.trees.data import LABEL, Scene, enlarge_scene, load_scenes, make_splits, matched_scene, training_tiles
from training.trees.model import (
    FINE_END,
    STRIDE,
    build_bottom,
    build_detector,
    build_head,
    build_middle,
    build_top,
    centernet_loss,
    chain,
    input_stride,
    load_backbone,
)

NAME = "trees"
OVERLAP_FRACTION = 4  # tiles overlap by a quarter of their side at evaluation and serving
EVAL_MIN_SCORE = 0.05  # AP needs the whole precision-recall curve


def positive_number(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--train-overlap", type=int, default=64, help="Overlap of training tiles, pixels.")
    parser.add_argument("--upscale", type=float, default=2.0,
                        help="Enlarge images by this before tiling (training, evaluation and serving).")
    parser.add_argument("--train-scales", type=positive_number, nargs="+", default=None,
                        help="Enlarge the training images by each of these factors, for tiles at several "
                             "scales (default: --upscale alone; evaluation and serving always use --upscale).")
    parser.add_argument("--colour-copies", type=int, default=2,
                        help="Recoloured copies of every training tile (saturation, contrast, brightness, balance).")
    parser.add_argument("--no-colour-matching", action="store_true",
                        help="Do not match every image's colours to the training images' (histogram matching).")
    parser.add_argument("--stage1-epochs", type=int, default=30)
    parser.add_argument("--stage2-epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--giou-weight", type=float, default=0.0,
                        help="Weight of a 1 - GIoU term on the boxes the centre cells predict (0: L1 only).")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Stage 1 (head).")
    parser.add_argument("--finetune-learning-rate", type=float, default=3e-4, help="Stage 2 (top blocks + head).")
    parser.add_argument("--finetune-from-block", type=int, choices=range(1, FINE_END + 1), default=FINE_END,
                        help="First backbone block fine-tuned in stage 2 (5: the stride-16 blocks 5-10; 3: also the "
                             "stride-8 blocks 3-4, caching block 2's stride-4 map instead). The ones below stay frozen.")
    parser.add_argument("--head-stride4", action="store_true",
                        help="The head also reads the stride-4 map below the fine-tuned blocks (a 3x3 stride-2 conv, "
                             "zero at first, added to the head's first conv; the output stays at stride 8). "
                             "Needs --finetune-from-block 2 or 3.")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="Shipped default for /detect.")
    parser.add_argument("--flip-views", type=int, choices=(1, 2, 4), default=4,
                        help="Mirror images of each tile run and averaged at test time, in evaluation and /detect.")
    parser.add_argument("--no-compare", action="store_true", help="Skip the frozen / random-init comparison.")
    parser.add_argument("--voc-folder", type=Path, default=None,
                        help="Your own Pascal VOC folder (default: the NEON trees of deepforest).")


# --- features and targets ----------------------------------------------------------------------

def run_batched(model: keras.Model, inputs: np.ndarray, batch: int = 32) -> np.ndarray:
    """Inference in batches, kept as float16 (the caches are large; the features are ReLU6-bounded).
    uint8 tiles are normalised a batch at a time: all of them as float32 would not fit in memory."""
    prepare = normalise if inputs.dtype == np.uint8 else (lambda x: x)
    out = [np.asarray(model(prepare(inputs[i:i + batch]), training=False)).astype(np.float16)
           for i in range(0, len(inputs), batch)]
    return np.concatenate(out)


def cached_features(frozen: list[keras.Model], tiles: np.ndarray) -> list[np.ndarray]:
    """Each part's output for every tile, the next part reading the one before's cache."""
    maps = [run_batched(frozen[0], tiles)]
    for part in frozen[1:]:
        maps.append(run_batched(part, maps[-1]))
    return maps


def encode_all(boxes: list[np.ndarray], tile: int) -> np.ndarray:
    return np.stack([encode(b, (tile // STRIDE, tile // STRIDE), STRIDE) for b in boxes])


def batches(inputs: tuple[np.ndarray, ...], targets: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((inputs if len(inputs) > 1 else inputs[0], targets))
    return data.shuffle(len(targets), seed=seed).repeat().batch(batch_size).prefetch(2)


# --- the two stages -----------------------------------------------------------------------------

def stage_weights(run: TrainingRun, stage: str) -> Path:
    return run.checkpoint_dir / f"{stage}.weights.h5"


class EpochCounter:
    """Numbers epochs across the stages of one run (the registry keeps one row per epoch number)."""

    def __init__(self) -> None:
        self.done = 0
        self.stages: set[str] = set()

    def take(self, epochs: int) -> int:
        first, self.done = self.done, self.done + epochs
        return first


def train_stage(run: TrainingRun, stage: str, model: keras.Model, data: tf.data.Dataset, epochs: int,
                learning_rate: float, args: argparse.Namespace, counter: EpochCounter) -> None:
    """Fit one stage, or restore it when an interrupted run already finished it."""
    first = counter.take(epochs)
    done = stage_weights(run, stage)
    if done.is_file():
        model.load_weights(done)
        print(f"stage {stage}: restored from {done}")
        return
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        learning_rate, epochs * args.steps_per_epoch, alpha=0.05)), loss=centernet_loss(args.giou_weight))
    model.fit(data, initial_epoch=first, epochs=first + epochs, steps_per_epoch=args.steps_per_epoch,
              callbacks=run.callbacks(stage), verbose=2 if args.quiet else 1)
    model.save_weights(done)


def freeze_batch_norm(model: keras.Model) -> None:
    """Fine-tuning on a few hundred tiles: keep the ImageNet batch statistics (inference mode)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def detail_channels(args: argparse.Namespace) -> int:
    """Channels of the stride-4 map the head reads (0: none); it is the frozen bottom's output."""
    if not args.head_stride4:
        return 0
    if input_stride(args.finetune_from_block) != 4:
        raise ValueError("--head-stride4 reads the frozen stride-4 map: it needs --finetune-from-block 2 or 3")
    return blocks()[args.finetune_from_block - 1].channels_out


def train_variant(run: TrainingRun, prefix: str, tiles: np.ndarray, targets: np.ndarray,
                  state: dict[str, np.ndarray] | None, args: argparse.Namespace, fine_tune: bool,
                  cache: dict[str, list[np.ndarray]], counter: EpochCounter) -> keras.Model:
    """One backbone initialisation through stage 1 (head on frozen features) and stage 2
    (the blocks from --finetune-from-block on + head, or the head alone for the frozen variant):
    returns the whole detector.

    Stage 1 depends only on the initialisation (same seed), so the frozen and the fine-tuned
    variants share it, and its cached features, through `cache` and the stage's saved weights."""
    keras.utils.set_random_seed(args.seed)
    # built in block order, so the head starts from the same random draws wherever fine-tuning starts
    bottom = build_bottom(args.tile, args.finetune_from_block)
    middle = build_middle(args.tile, args.finetune_from_block)
    tuned = [part for part in (middle, build_top(args.tile)) if part is not None]
    head = build_head(args.tile, detail_channels=detail_channels(args))
    load_backbone([bottom, *tuned], state)
    init = "imagenet-" if state is not None else "random-"
    if init not in cache:
        cache[init] = cached_features([bottom, *tuned], tiles)
    first, head_maps = cache[init][0], tuple(cache[init][-len(head.inputs):])
    for part in (bottom, *tuned):
        part.trainable = False
    stage1 = "stage1" if state is not None else "random-stage1"
    if stage1 in counter.stages:  # shared with the variant trained before: already counted
        head.load_weights(stage_weights(run, stage1))
    else:
        counter.stages.add(stage1)
        train_stage(run, stage1, head, batches(head_maps, targets, args.batch_size, args.seed),
                    args.stage1_epochs, args.learning_rate, args, counter)
    if fine_tune:
        for part in tuned:
            part.trainable = True
            freeze_batch_norm(part)
        features = keras.Input(first.shape[1:])
        stage2 = keras.Model(features, chain(tuned, head, features))
        data = batches((first,), targets, args.batch_size, args.seed + 1)
    else:
        stage2, data = head, batches(head_maps, targets, args.batch_size, args.seed + 1)
    train_stage(run, f"{prefix}stage2", stage2, data, args.stage2_epochs,
                args.finetune_learning_rate if fine_tune else args.learning_rate, args, counter)
    for part in (bottom, *tuned, head):
        part.trainable = True
    return build_detector([bottom, *tuned], head, args.tile)


# --- evaluation ---------------------------------------------------------------------------------

def detect_scene(model: keras.Model, scene: Scene, fields: dict[str, Any], min_score: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A whole scene through the detector as `/detect` sees an upload, with the manifest's `fields`."""
    tiled = tile_as_manifest(scene.pixels, fields)
    views = view_count(fields)
    batch = with_mirrors(tiled.batch, views)
    outputs = run_in_pieces(lambda piece: np.asarray(model(piece, training=False)), batch, TILES_PER_CALL)
    return detections_from_outputs(averaged_views(outputs, views), tiled, STRIDE, min_score)


def score_set(model: keras.Model, scenes: list[Scene], fields: dict[str, Any]) -> dict[str, Any]:
    """AP@0.5 with a bootstrap 95 % interval, and precision / recall at the shipped threshold."""
    if not scenes:
        return {}
    results = evaluate_images([detect_scene(model, s, fields, EVAL_MIN_SCORE) for s in scenes],
                              [s.boxes for s in scenes])
    low, high = bootstrap_ap(results)
    scores = np.concatenate([r.scores for r in results])
    hits = np.concatenate([r.hits for r in results])
    truth = sum(len(r.truth) for r in results)
    precision, recall = precision_recall(scores, hits, truth, fields["score_threshold"])
    return {"ap50": round(pooled_ap(results), 4), "ap50_ci95": [round(low, 4), round(high, 4)],
            "precision": round(precision, 4), "recall": round(recall, 4), "boxes": truth,
            "images": [s.name for s in scenes]}


def score_all(model: keras.Model, splits, fields: dict[str, Any]) -> dict[str, Any]:
    return {"in_domain": score_set(model, splits.in_domain, fields),
            "cross_site": score_set(model, splits.cross_site, fields)}


# --- the command --------------------------------------------------------------------------------

def neon_folder(settings: Settings) -> Path:
    """The VOC folder of the default dataset, fetched and verified."""
    return fetch(NEON_TREES, settings.DATA_DIR) / "deepforest" / "data"


def load_data(args: argparse.Namespace, settings: Settings):
    return make_splits(load_scenes(args.voc_folder or neon_folder(settings)))


def imagenet_state(settings: Settings) -> dict[str, np.ndarray]:
    return read_state_dict(load_weights_file(settings))


def serving_fields(args: argparse.Namespace, reference: np.ndarray | None) -> dict[str, Any]:
    """What `/detect` and the evaluation need to see an image as training did (the manifest's `detection`)."""
    fields = {"tile": args.tile, "overlap": args.tile // OVERLAP_FRACTION, "stride": STRIDE,
              "score_threshold": args.score_threshold, "nms_iou": 0.5, "upscale": args.upscale,
              "flip_views": args.flip_views}
    if reference is not None:
        fields["colour_reference"] = reference.tolist()
    return fields


def refuse_changed_flags(run: TrainingRun, params: dict[str, Any]) -> None:
    """A resumed run restores the stages it finished: going on with other tiles or another loss
    would train one detector on two recipes, so a resume must repeat the flags the run started with."""
    earlier = run.recorded_params()
    changed = [f"{name} {earlier[name]!r} -> {value!r}" for name, value in params.items()
               if name in earlier and earlier[name] != value]  # a flag newer than the run: its default is the old way
    if changed:
        raise ValueError(f"run {run.run_id} started with other flags; resume it with the same ones "
                         f"(changed: {'; '.join(changed)})")


def train_on(splits, state: dict[str, np.ndarray], args: argparse.Namespace, settings: Settings,
             dataset: str | None = None, data_fingerprint: str | None = None) -> int:
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("command", "model", "resume", "quiet")}
    with TrainingRun(NAME, settings, params=params, seed=args.seed,
                     source=None if dataset else NEON_TREES, dataset=dataset,
                     data_fingerprint=data_fingerprint, resume=args.resume) as run:
        if args.resume:
            refuse_changed_flags(run, params)
        reference = None if args.no_colour_matching else np.round(colour_reference(s.pixels for s in splits.train), 2)
        fields = serving_fields(args, reference)
        scales = args.train_scales or [args.upscale]
        matched = [matched_scene(s, reference) for s in splits.train]  # once per scene, not per scale
        scenes = [enlarge_scene(scene, scale) for scene in matched for scale in scales]
        tiles, boxes = training_tiles(scenes, args.tile, args.train_overlap, colour_copies=args.colour_copies,
                                      seed=args.seed)
        targets = encode_all(boxes, args.tile)
        print(f"{len(tiles)} training tiles (with flips and recoloured copies), {sum(len(b) for b in boxes)} boxes")
        cache: dict[str, list[np.ndarray]] = {}
        counter = EpochCounter()
        detector = train_variant(run, "", tiles, targets, state, args, fine_tune=True, cache=cache, counter=counter)
        def score(model: keras.Model) -> dict[str, Any]:
            return score_all(model, splits, fields)

        metrics: dict[str, Any] = {"fine_tuned": score(detector)}
        print(json.dumps(metrics))
        if not args.no_compare:
            frozen = train_variant(run, "frozen-", tiles, targets, state, args, fine_tune=False, cache=cache, counter=counter)
            metrics["frozen"] = score(frozen)
            random = train_variant(run, "random-", tiles, targets, None, args, fine_tune=True, cache=cache, counter=counter)
            metrics["random_init"] = score(random)
        metrics.update({"shipped": "fine_tuned", "training_tiles": len(tiles)})
        from training.trees.plots import plot_stages

        plot_stages(run.history(), run.plots_dir / "loss.png")
        return run.publish(
            detector, task="detect", input_shape=[args.tile, args.tile, 3], labels=[LABEL], test_metrics=metrics,
            preprocessing={"kind": "detection_tiles", "mean": 127.0, "scale": 128.0},
            description=f"Tree crowns: EfficientNet-Lite0 (ImageNet, blocks {args.finetune_from_block}-10 fine-tuned) "
                        "with a CenterNet-style "
                        f"head at stride 8 on images enlarged x{args.upscale:g}; NEON aerial images from deepforest.",
            extra={"detection": fields},
        )


def train(args: argparse.Namespace, settings: Settings) -> int:
    splits = load_data(args, settings)
    dataset = str(args.voc_folder) if args.voc_folder else None
    return train_on(splits, imagenet_state(settings), args, settings, dataset=dataset,
                    data_fingerprint="user-folder" if dataset else None)


def evaluate(settings: Settings, version: int | None) -> dict[str, Any]:
    model, manifest = load_stored(settings, NAME, version)
    fields = (manifest.model_extra or {})["detection"]
    splits = make_splits(load_scenes(neon_folder(settings)))
    metrics = {"model": NAME, "version": manifest.version, "score_threshold": fields["score_threshold"],
               **score_all(model, splits, fields)}
    store_evaluation(settings, manifest, metrics)
    return metrics


