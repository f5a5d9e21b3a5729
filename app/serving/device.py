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


def configure_threads(intra_op: int, inter_op: int) -> None:
    """TensorFlow's thread pools; 0 keeps TensorFlow's default (one per core)."""
    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:  # TensorFlow already started in this process (tests): keep its pools
        pass
