"""`DEVICE=cpu|gpu|auto`, applied before TensorFlow touches any device."""

from __future__ import annotations

import tensorflow as tf


class DeviceUnavailable(RuntimeError):
    pass


def configure_device(mode: str) -> str:
    """Hide or require GPUs as asked; return the TensorFlow device name models run on."""
    gpus = tf.config.list_physical_devices("GPU")
    if mode == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # already initialised in this process (tests): nothing placed on GPU
            pass
        return "/CPU:0"
    if mode == "gpu" and not gpus:
        raise DeviceUnavailable("DEVICE=gpu but TensorFlow sees no GPU; use DEVICE=cpu or auto")
    return "/GPU:0" if gpus else "/CPU:0"
