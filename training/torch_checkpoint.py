"""Read a PyTorch state dict saved in the legacy (pre-zip) format, without torch.

The legacy format is five pickles in a row — magic number, protocol version, system info, the
state dict, the list of storage keys — then each storage's raw bytes, preceded by its element
count (int64, little-endian). Tensors in the state dict point at storages by key
(`persistent_id`), so they are built after the bytes are read.

A pickle can run any code it names, so the unpickler admits only the few globals a state dict
needs (OrderedDict, the tensor rebuild functions, storage classes) and refuses every other one.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STORAGE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype)
    for name, dtype in {
        "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
        "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


class CheckpointError(ValueError):
    """The file is not a legacy PyTorch state dict we can read safely."""


@dataclass(frozen=True)
class StorageType:
    """Stands in for `torch.FloatStorage` and friends: only the element type matters."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class Storage:
    """A flat buffer referred to by key; its bytes arrive after the pickles."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class PendingTensor:
    """A tensor whose storage has not been read yet."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError(f"storage {self.storage.key} was never read")
        if self.shape and any(d > 0 for d in self.shape):
            last = self.offset + sum((d - 1) * s for d, s in zip(self.shape, self.stride, strict=True))
            if self.offset < 0 or last >= data.size:
                raise CheckpointError(f"a tensor reaches past the end of storage {self.storage.key}")
        elif not self.shape and self.offset >= data.size:
            raise CheckpointError(f"a scalar reaches past the end of storage {self.storage.key}")
        itemsize = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.shape, strides=tuple(s * itemsize for s in self.stride)
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage: Storage, storage_offset: int, size: tuple[int, ...],
                       stride: tuple[int, ...], requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None) -> PendingTensor:
    if not isinstance(storage, Storage):
        raise CheckpointError("a tensor was rebuilt from something that is not a storage")
    return PendingTensor(storage, int(storage_offset), tuple(int(d) for d in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: PendingTensor, requires_grad: bool = False, backward_hooks: Any = None) -> PendingTensor:
    """`nn.Parameter` in a state dict: the tensor is all we keep."""
    return data


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class StateDictUnpickler(pickle.Unpickler):
    """Admits only what a state dict needs; every other global is refused before it is imported."""

    def __init__(self, handle: BinaryIO):
        super().__init__(handle, encoding="utf-8")
        self.storages: dict[str, Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a state dict only holds tensors, storages and OrderedDicts"
            ) from None

    def persistent_load(self, pid: Any) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"persistent id names {storage_type!r:.80}, not a storage class")
        if view_metadata is not None:
            raise CheckpointError("storage views (pre-1.0 checkpoints) are not supported")
        key = str(key)
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = Storage(key, storage_type.dtype, int(numel))
        return storage


def _load_one(handle: BinaryIO, unpickler: StateDictUnpickler) -> Any:
    try:
        return unpickler.load()
    except (pickle.UnpicklingError, CheckpointError):
        raise
    except Exception as error:
        raise CheckpointError(f"not a legacy PyTorch checkpoint ({type(error).__name__}: {error})") from None


def _read_storage(handle: BinaryIO, storage: Storage) -> None:
    header = handle.read(8)
    if len(header) != 8:
        raise CheckpointError(f"the file ends before storage {storage.key}")
    (count,) = struct.unpack("<q", header)
    if count != storage.numel:
        raise CheckpointError(f"storage {storage.key} holds {count} elements, the pickle says {storage.numel}")
    nbytes = count * storage.dtype.itemsize
    raw = handle.read(nbytes)
    if len(raw) != nbytes:
        raise CheckpointError(f"the file ends inside storage {storage.key}")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialise(value: Any) -> Any:
    if isinstance(value, PendingTensor):
        return value.materialise()
    if isinstance(value, dict):
        return OrderedDict((key, _materialise(item)) for key, item in value.items())
    return value


def read_state_dict(source: Path | bytes | BinaryIO) -> OrderedDict[str, np.ndarray]:
    """A legacy-format `.pth` state dict → parameter name to numpy array, in file order."""
    if isinstance(source, Path | str):
        handle: BinaryIO = io.BytesIO(Path(source).read_bytes())
    elif isinstance(source, bytes | bytearray):
        handle = io.BytesIO(source)
    else:
        handle = source
    if handle.read(4) == b"PK\x03\x04":
        raise CheckpointError("this is the zip-based format (torch >= 1.6); only the legacy format is read")
    handle.seek(handle.tell() - 4)
    unpickler = StateDictUnpickler(handle)
    if _load_one(handle, unpickler) != MAGIC_NUMBER:
        raise CheckpointError("no PyTorch magic number: not a legacy checkpoint")
    if _load_one(handle, unpickler) != PROTOCOL_VERSION:
        raise CheckpointError("unknown PyTorch protocol version")
    system = _load_one(handle, unpickler)
    if not isinstance(system, dict) or not system.get("little_endian", False):
        raise CheckpointError("only little-endian checkpoints are supported")
    state = _load_one(handle, unpickler)
    keys = _load_one(handle, unpickler)
    if not isinstance(keys, list) or set(map(str, keys)) != set(unpickler.storages):
        raise CheckpointError("the storage key list does not match the storages the state dict uses")
    for key in keys:
        _read_storage(handle, unpickler.storages[str(key)])
    if not isinstance(state, dict):
        raise CheckpointError(f"the checkpoint holds a {type(state).__name__}, not a state dict")
    tensors = _materialise(state)
    for name, value in tensors.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
    return tensors
