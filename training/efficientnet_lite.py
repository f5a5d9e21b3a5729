"""EfficientNet-Lite0 in Keras, built from built-in layers only, and its weights from a PyTorch state dict.

EfficientNet-Lite drops squeeze-and-excitation and swish (ReLU6 instead) so it quantises well.
Convolutions pad like TensorFlow's "SAME" (the extra pixel bottom/right), which is what the
published PyTorch weights were trained with: symmetric padding shifts every stride-2 layer by
half a pixel and the logits drift far from the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

BN_EPSILON = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expansion: int
    channels_in: int
    channels_out: int


STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Block:
    """One inverted-residual block, numbered as in the PyTorch state dict (`_blocks.<index>`)."""

    index: int
    kernel: int
    stride: int
    expansion: int
    channels_in: int
    channels_out: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.channels_in == self.channels_out

    @property
    def output_layer(self) -> str:
        """The name of the layer whose output is this block's output."""
        return f"block{self.index}_add" if self.residual else f"block{self.index}_project_bn"


def blocks() -> list[Block]:
    """The 16 blocks in order: the first of each stage strides and changes width, the rest repeat."""
    result = []
    for stage in STAGES:
        for repeat in range(stage.repeats):
            first = repeat == 0
            result.append(Block(
                index=len(result), kernel=stage.kernel, stride=stage.stride if first else 1,
                expansion=stage.expansion,
                channels_in=stage.channels_in if first else stage.channels_out,
                channels_out=stage.channels_out,
            ))
    return result


def conv_bn_relu6(x, filters: int, kernel: int, stride: int, name: str, activate: bool = True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x


def inverted_residual_block(x, block: Block):
    name = f"block{block.index}"
    inputs = x
    if block.expansion != 1:
        x = conv_bn_relu6(x, block.channels_in * block.expansion, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(block.kernel, strides=block.stride, padding="same", use_bias=False,
                               name=f"{name}_depthwise_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
    x = conv_bn_relu6(x, block.channels_out, 1, 1, f"{name}_project", activate=False)
    if block.residual:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


def efficientnet_lite0(input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
                       include_top: bool = True, name: str = "efficientnet_lite0") -> keras.Model:
    """The network; with `include_top` it ends in 1,000 ImageNet probabilities (the `logits`
    layer before the softmax), without it in the 1,280-channel head features."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = conv_bn_relu6(inputs, STEM_CHANNELS, 3, 2, "stem")
    for block in blocks():
        x = inverted_residual_block(x, block)
    x = conv_bn_relu6(x, HEAD_CHANNELS, 1, 1, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        x = layers.Dense(NUM_CLASSES, name="logits")(x)
        x = layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, x, name=name)


# --- PyTorch weights --------------------------------------------------------------------------

def _torch_prefix(layer_name: str) -> str | None:
    """Keras layer name → the state-dict prefix of the same layer (None: no weights)."""
    fixed = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
             "logits": "_fc"}
    if layer_name in fixed:
        return fixed[layer_name]
    if not layer_name.startswith("block"):
        return None
    index, _, part = layer_name[len("block"):].partition("_")
    parts = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "depthwise_conv": "_depthwise_conv",
             "depthwise_bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2"}
    return f"_blocks.{index}.{parts[part]}" if part in parts else None


def _keras_weights(layer: keras.layers.Layer, prefix: str, state: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """PyTorch layouts → Keras layouts: conv OIHW → HWIO, depthwise C1HW → HWC1, dense (out, in) → (in, out)."""
    if isinstance(layer, layers.BatchNormalization):
        return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]
    weight = state[f"{prefix}.weight"]
    if isinstance(layer, layers.DepthwiseConv2D):
        return [weight.transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):
        return [weight.transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.Dense):
        return [weight.T, state[f"{prefix}.bias"]]
    raise TypeError(f"no weight mapping for {type(layer).__name__} {layer.name}")


def load_torch_weights(model: keras.Model, state: Mapping[str, np.ndarray]) -> list[str]:
    """Copy a state dict into `model` (with or without its top); returns the keys left unused.

    Every Keras layer with weights must find its tensors with the right shapes, or this fails."""
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        if prefix is None:
            raise KeyError(f"layer {layer.name} has weights but no PyTorch counterpart")
        values = _keras_weights(layer, prefix, state)
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(f"{layer.name}: PyTorch shapes {[v.shape for v in values]} != Keras {expected}")
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])
        used.update(key for key in state if key.startswith(prefix + "."))
    return sorted(key for key in state if key not in used and not key.endswith("num_batches_tracked"))
