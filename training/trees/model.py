"""The tree-crown detector: EfficientNet-Lite0 features at strides 8 and 16, and a CenterNet-style head.

Nested models so training can cache what does not change:
  bottom  image → stem and blocks up to the first fine-tuned one (by default blocks 0-4, stride 8;
          always frozen),
  middle  the remaining stride-8 blocks (only when fine-tuning starts below block 5; frozen in
          stage 1, fine-tuned in stage 2 with the top),
  top     stride-8 → stride-16 features (blocks 5-10; frozen in stage 1, fine-tuned in stage 2),
  head    both → the (tile/8, tile/8, 5) output: the stride-16 map is upsampled and concatenated
          (optionally plus the bottom's stride-4 map, brought down to stride 8).
The served detector chains them; everything is a built-in Keras layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
from keras import layers

from app.detection.centernet import OUTPUT_CHANNELS
from training.efficientnet_lite import STEM_CHANNELS, blocks, conv_bn_relu6, inverted_residual_block, load_torch_weights

STRIDE = 8
FINE_END = 5  # blocks 0-4 end at stride 8, 40 channels
TOP_BLOCKS = range(5, 11)  # ends at stride 16, 112 channels
HEAT_PRIOR = 0.05  # initial heat everywhere: most cells hold no tree centre


def input_stride(first: int) -> int:
    """The stride of the map block `first` reads: the stem's 2 times the strides of the blocks before it."""
    return 2 * int(np.prod([block.stride for block in blocks()[:first]]))


def build_bottom(tile: int, stop: int = FINE_END) -> keras.Model:
    """Stem and blocks 0 to `stop` - 1: the part that stays frozen, so its output can be cached."""
    image = keras.Input((tile, tile, 3), name="tile")
    x = conv_bn_relu6(image, STEM_CHANNELS, 3, 2, "stem")
    for block in blocks()[:stop]:
        x = inverted_residual_block(x, block)
    return keras.Model(image, x, name="backbone_bottom")


def build_blocks(tile: int, span: range, name: str) -> keras.Model:
    """Blocks `span` alone, reading the map the block before them wrote."""
    stride, first = input_stride(span.start), blocks()[span.start]
    features = keras.Input((tile // stride, tile // stride, first.channels_in), name=f"stride{stride}")
    x = features
    for block in blocks()[span.start:span.stop]:
        x = inverted_residual_block(x, block)
    return keras.Model(features, x, name=name)


def build_middle(tile: int, start: int) -> keras.Model | None:
    """The stride-8 blocks fine-tuned with the top when fine-tuning starts at block `start` < 5."""
    return build_blocks(tile, range(start, FINE_END), "backbone_middle") if start < FINE_END else None


def build_top(tile: int) -> keras.Model:
    return build_blocks(tile, TOP_BLOCKS, "backbone_top")


def build_head(tile: int, width: int = 64, detail_channels: int = 0) -> keras.Model:
    """With `detail_channels`, the head also reads a stride-4 map of that many channels (finer edges
    for the boxes), brought to stride 8 by a strided conv so the output keeps STRIDE. That conv starts
    at zero and adds to the first conv's output, so the head starts as the plain one, same weights:
    concatenated and randomly initialised, the large block-2 map (std ≈ 9) pushed the initial heat
    above 0.5 and the head collapsed to firing nowhere."""
    side = tile // STRIDE
    fine = keras.Input((side, side, blocks()[FINE_END - 1].channels_out), name="fine")
    coarse = keras.Input((side // 2, side // 2, blocks()[TOP_BLOCKS.stop - 1].channels_out), name="coarse")
    up = layers.UpSampling2D(2, interpolation="bilinear", name="head_upsample")(coarse)
    x = layers.Concatenate(name="head_concat")([fine, up])
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="head_conv1")(x)
    inputs = [fine, coarse]
    if detail_channels:
        detail = keras.Input((side * 2, side * 2, detail_channels), name="detail")
        inputs.insert(0, detail)
        added = layers.Conv2D(width, 3, strides=2, padding="same", kernel_initializer="zeros", name="head_detail")
        x = layers.Add(name="head_add_detail")([x, added(detail)])
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="head_conv2")(x)
    bias = float(-np.log((1 - HEAT_PRIOR) / HEAT_PRIOR))
    heat = layers.Conv2D(1, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(bias),
                         name="head_heat")(x)
    geometry = layers.Conv2D(OUTPUT_CHANNELS - 1, 1, name="head_geometry")(x)
    output = layers.Concatenate(name="head_output")([heat, geometry])
    return keras.Model(inputs, output, name="head")


def chain(backbone: list[keras.Model], head: keras.Model, inputs):
    """The backbone parts one after the other; the head reads the last two maps (strides 8 and 16),
    or three when it also reads the stride-4 map."""
    maps = [inputs]
    for part in backbone:
        maps.append(part(maps[-1]))
    return head(maps[-len(head.inputs):])


def build_detector(backbone: list[keras.Model], head: keras.Model, tile: int) -> keras.Model:
    """The served detector, from fresh copies of the trained parts: a compiled part would save its
    training loss (not a built-in) and the service could not load the file (so would a clone_model
    copy, which keeps the compile settings)."""
    copies = []
    for part in [*backbone, head]:
        copy = keras.Model.from_config(part.get_config())
        copy.set_weights(part.get_weights())
        copies.append(copy)
    image = keras.Input((tile, tile, 3), name="image")
    return keras.Model(image, chain(copies[:-1], copies[-1], image), name="trees")


def load_backbone(backbone: list[keras.Model], state: Mapping[str, np.ndarray] | None) -> None:
    """Copy the ImageNet weights in (state=None leaves the random initialisation)."""
    if state is not None:
        for part in backbone:
            load_torch_weights(part, state)


def box_corners(geometry):
    """(..., 4) offset x, y and log width, height → corners x1, y1, x2, y2 in cells, in the cell's frame."""
    import tensorflow as tf

    centre = geometry[..., 0:2]
    half = tf.exp(tf.clip_by_value(geometry[..., 2:4], -5.0, 5.0)) / 2
    return tf.concat([centre - half, centre + half], axis=-1)


def giou(predicted, true):
    """Generalised IoU of corner boxes (..., 4): IoU minus the enclosing box's share not covered."""
    import tensorflow as tf

    def area(box):
        return tf.maximum(box[..., 2] - box[..., 0], 0.0) * tf.maximum(box[..., 3] - box[..., 1], 0.0)

    low, high = tf.maximum(predicted[..., :2], true[..., :2]), tf.minimum(predicted[..., 2:], true[..., 2:])
    inter = tf.reduce_prod(tf.maximum(high - low, 0.0), axis=-1)
    union = area(predicted) + area(true) - inter
    outer = tf.reduce_prod(tf.maximum(predicted[..., 2:], true[..., 2:]) - tf.minimum(predicted[..., :2], true[..., :2]),
                           axis=-1)
    union, outer = tf.maximum(union, 1e-6), tf.maximum(outer, 1e-6)
    return inter / union - (outer - union) / outer


def centernet_loss(giou_weight: float = 0.0):
    """CenterNet's loss: penalty-reduced focal loss on the heat, L1 on offset and log-size at the
    cells that learn a box (each centre and its neighbours, by their weight); with `giou_weight`,
    also 1 − GIoU of the box those cells predict (as TTFNet):
    AP@0.5 scores overlap, and an L1 on log-size treats a box too narrow and one too short alike."""
    import tensorflow as tf

    def loss(target, output):
        heat_true, mask = target[..., 0], target[..., 5]
        heat = tf.clip_by_value(output[..., 0], 1e-4, 1 - 1e-4)
        positive = tf.cast(heat_true >= 1.0, heat.dtype)
        positive_loss = -tf.math.log(heat) * tf.square(1 - heat) * positive
        negative_loss = -tf.math.log(1 - heat) * tf.square(heat) * tf.pow(1 - heat_true, 4) * (1 - positive)
        count = tf.maximum(tf.reduce_sum(positive), 1.0)
        heat_loss = (tf.reduce_sum(positive_loss) + tf.reduce_sum(negative_loss)) / count
        offset_loss = tf.reduce_sum(tf.abs(output[..., 1:3] - target[..., 1:3]) * mask[..., None]) / count
        size_loss = tf.reduce_sum(tf.abs(output[..., 3:5] - target[..., 3:5]) * mask[..., None]) / count
        total = heat_loss + offset_loss + size_loss
        if giou_weight:
            overlap = giou(box_corners(output[..., 1:5]), box_corners(target[..., 1:5]))
            total += giou_weight * tf.reduce_sum((1.0 - overlap) * mask) / count
        return total

    return loss
