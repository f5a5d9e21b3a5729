"""Test-time flips for the CenterNet-style detector: the same tiles seen mirrored, outputs averaged.

The detector was trained on tiles and their left-right, top-bottom and both-way mirror images, so
each mirror is an equally valid view of a tile. Running all of them as one batch and averaging the
outputs, each flipped back into the tile's own frame, steadies the heat peaks and the box sizes:
on the held-out NEON strips it lifted AP@0.5 from 0.431 to 0.506 (docs/trees.md). It costs one
model pass per view.

Flipping back a left-right mirror: cells reverse along the columns, and a centre at `cx` cells
from the left edge of a grid `W` cells wide was seen at `W - cx`, so its offset within its cell,
`cx - floor(cx)`, was seen as `1 - offset`. Likewise for rows and the y offset.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

# (left-right, top-bottom) mirrors, in the order views are added: 1, 2 or 4 of them
FLIPS = ((False, False), (True, False), (False, True), (True, True))
OFFSET_X, OFFSET_Y = 1, 2  # output channels that a mirror turns into 1 - value


def mirrored(x: tf.Tensor, left_right: bool, top_bottom: bool) -> tf.Tensor:
    """(N, rows, cols, C) images or outputs, mirrored along columns and/or rows."""
    axes = [axis for axis, flip in ((2, left_right), (1, top_bottom)) if flip]
    return tf.reverse(x, axes) if axes else x


def unmirrored_output(output: tf.Tensor, left_right: bool, top_bottom: bool) -> tf.Tensor:
    """A mirrored tile's (N, rows, cols, 5) output in the tile's own frame."""
    output = mirrored(output, left_right, top_bottom)
    channels = output.shape[-1]
    flip_channels = [c for c, flip in ((OFFSET_X, left_right), (OFFSET_Y, top_bottom)) if flip]
    if not flip_channels:
        return output
    sign = [(-1.0 if c in flip_channels else 1.0) for c in range(channels)]
    shift = [(1.0 if c in flip_channels else 0.0) for c in range(channels)]
    return output * tf.constant(sign, output.dtype) + tf.constant(shift, output.dtype)


class FlipAveraged:
    """`model` run on `views` mirror images of each tile in one batch, outputs flipped back and averaged.

    Called like a Keras model (`model(x, training=False)`), eagerly or inside a `tf.function`, so
    `/detect` (through `CompiledModel`) and the evaluation run exactly the same views."""

    def __init__(self, model: Any, views: int):
        if views not in (1, 2, 4):
            raise ValueError(f"flip views must be 1, 2 or 4, not {views}")
        self.model = model
        self.flips = FLIPS[:views]

    def __call__(self, x: Any, training: bool = False) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if len(self.flips) == 1:
            return self.model(x, training=training)
        outputs = self.model(tf.concat([mirrored(x, *flip) for flip in self.flips], axis=0), training=training)
        parts = tf.split(outputs, len(self.flips), axis=0)
        return tf.add_n([unmirrored_output(part, *flip) for part, flip in zip(parts, self.flips, strict=True)]
                        ) / len(self.flips)


def with_flip_views(model: Any, fields: dict[str, Any]) -> Any:
    """The model as a detector's manifest `detection` fields ask it to be run (`flip_views`, default 1)."""
    views = int(fields.get("flip_views", 1))
    return model if views == 1 else FlipAveraged(model, views)
