"""tasks/backbones/torch_weights.py: a legacy torch.save file written here without torch, the installed Lite0 file,
pickles that would run code (refused, nothing run), and files that are cut short, empty or in torch's zip format."""

import builtins
import collections
import io
import os
import pickle
import pickletools
import struct
import sys
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tasks.backbones import pretrained, torch_weights

SYSTEM_FACTS = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


# Stand-ins for the torch names a state dict pickle holds. Pickle writes a class or function as the global
# `module name` after checking it can be imported back, so they are put under fake `torch` modules while dumping.
class FloatStorage:
    __module__ = "torch"


class HalfStorage:
    __module__ = "torch"


class LongStorage:
    __module__ = "torch"


def _rebuild_tensor_v2(*arguments):
    raise AssertionError("a stand-in: only ever pickled")


_rebuild_tensor_v2.__module__ = "torch._utils"
STORAGE_TYPES = {np.dtype(np.float32): FloatStorage, np.dtype(np.float16): HalfStorage,
                 np.dtype(np.int64): LongStorage}


@dataclass(eq=False)
class Storage:
    key: str
    values: np.ndarray  # flat


@dataclass(eq=False)
class Tensor:
    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def __reduce__(self):
        return _rebuild_tensor_v2, (self.storage, self.offset, self.shape, self.stride, False,
                                    collections.OrderedDict())


class StatePickler(pickle.Pickler):
    """Writes each storage as torch does: a persistent id ('storage', type, key, device, elements, None)."""

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return "storage", STORAGE_TYPES[obj.values.dtype], obj.key, "cpu", obj.values.size, None
        return None


def dumps(obj, pickler=pickle.Pickler) -> bytes:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for kind in STORAGE_TYPES.values():
        setattr(torch, kind.__name__, kind)
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    buffer = io.BytesIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "torch", torch)
        patch.setitem(sys.modules, "torch._utils", utils)
        pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def legacy_file(path: Path, state: dict[str, Tensor], state_pickle: bytes | None = None,
                storage_counts: dict[str, int] | None = None) -> Path:
    """`state` as torch.save(..., _use_new_zipfile_serialization=False) lays it out; `state_pickle` stands in for
    the state dict's pickle, `storage_counts` for the element counts written before each storage."""
    storages = list({id(tensor.storage): tensor.storage for tensor in state.values()}.values())
    parts = [dumps(torch_weights.MAGIC_NUMBER), dumps(torch_weights.PROTOCOL_VERSION), dumps(SYSTEM_FACTS),
             state_pickle if state_pickle is not None else dumps(collections.OrderedDict(state), StatePickler),
             dumps([storage.key for storage in storages])]
    for storage in storages:
        count = (storage_counts or {}).get(storage.key, storage.values.size)
        parts += [struct.pack("<q", count), storage.values.astype(storage.values.dtype.newbyteorder("<")).tobytes()]
    path.write_bytes(b"".join(parts))
    return path


def small_state() -> dict[str, Tensor]:
    shared = Storage("0", np.arange(10, dtype=np.float32) / 4)
    half = Storage("1", np.array([0.5, -2.0, 65504.0, 1e-3], np.float16))
    counts = Storage("2", np.array([3, -1, 2**40], np.int64))
    return {"weight": Tensor(shared, 0, (2, 3), (3, 1)),
            "transposed": Tensor(shared, 0, (2, 3), (1, 2)),  # column-major, as files converted from TF hold
            "bias": Tensor(shared, 6, (4,), (1,)),  # the tail of the same storage
            "scalar": Tensor(shared, 9, (), ()),
            "half": Tensor(half, 1, (3,), (1,)),
            "counts": Tensor(counts, 0, (3,), (1,))}


def refused(path: Path, error: type[ValueError] = ValueError) -> str:
    """The message of the `error` (exactly that type) reading `path` raises; it names the file."""
    with pytest.raises(error) as caught:
        torch_weights.read_state_dict(path)
    assert type(caught.value) is error
    assert str(path) in str(caught.value)
    return str(caught.value)


def real_file() -> Path:
    return pretrained.source_file(pretrained.BACKBONES["efficientnet_lite0"])


def pickle_ends(data: bytes, count: int) -> list[int]:
    """Where each of the first `count` pickles in `data` ends, found without loading any of them."""
    stream, ends = io.BytesIO(data), []
    for _ in range(count):
        for _ in pickletools.genops(stream):
            pass
        ends.append(stream.tell())
    return ends


def test_a_legacy_file_written_without_torch_reads_back_with_offsets_strides_and_dtypes(tmp_path):
    path = legacy_file(tmp_path / "small.pth", small_state())
    for name in (b"ccollections\nOrderedDict\n", b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch\nFloatStorage\n"):
        assert name in path.read_bytes()

    state = torch_weights.read_state_dict(path)

    assert list(state) == ["weight", "transposed", "bias", "scalar", "half", "counts"]
    np.testing.assert_array_equal(state["weight"], [[0, 0.25, 0.5], [0.75, 1, 1.25]])
    np.testing.assert_array_equal(state["transposed"], [[0, 0.5, 1], [0.25, 0.75, 1.25]])
    np.testing.assert_array_equal(state["bias"], [1.5, 1.75, 2, 2.25])
    assert state["scalar"].shape == () and state["scalar"] == 2.25
    np.testing.assert_array_equal(state["half"], np.array([-2.0, 65504.0, 1e-3], np.float16))
    np.testing.assert_array_equal(state["counts"], [3, -1, 2**40])
    assert [state[name].dtype for name in ("weight", "half", "counts")] == [np.float32, np.float16, np.int64]
    for value in state.values():
        assert value.flags.c_contiguous and value.dtype.isnative


def test_the_installed_lite0_file_reads_into_its_296_tensors():
    state = torch_weights.read_state_dict(real_file())
    assert len(state) == 296
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)  # stored column-major: read through its strides
    assert all(value.flags.c_contiguous for value in state.values())
    assert state["_bn0.num_batches_tracked"].shape == () and state["_bn0.num_batches_tracked"].dtype == np.int64
    assert all((state[name] >= 0).all() for name in state if name.endswith("running_var"))


class RunsCode:
    """A pickle of this calls `function(argument)` when loaded: how a crafted weights file runs code."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


# payload -> the global its pickle names (protocol 2 writes builtins as Python 2's __builtin__)
PAYLOADS = {
    "os.system": (lambda marker: RunsCode(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
    "builtins.eval": (lambda marker: RunsCode(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
                      "__builtin__.eval"),
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_a_state_dict_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "ran"
    make_payload, refused_global = PAYLOADS[payload]
    crafted = pickle.dumps(collections.OrderedDict(weight=make_payload(marker)), protocol=2)
    pickle.loads(crafted)  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    path = legacy_file(tmp_path / "crafted.pth", small_state(), state_pickle=crafted)

    message = refused(path, torch_weights.UnsafeWeightsFile)

    assert f"refers to {refused_global}," in message and "nothing in it was run" in message
    assert not marker.exists()


@pytest.mark.parametrize("record", [
    "storage",
    ("storage", "FloatStorage", "0", "cpu", 10, None),  # the type as a string, not the torch global
    ("storage", FloatStorage, 0, "cpu", 10, None),  # an integer key
    ("storage", FloatStorage, "0", "cpu", -1, None),
    ("module", FloatStorage, "0", "cpu", 10, None),
])
def test_a_persistent_record_that_is_not_a_storage_is_refused(tmp_path, record):
    class Crafted(StatePickler):
        def persistent_id(self, obj):
            return record if isinstance(obj, Storage) else None

    path = legacy_file(tmp_path / "crafted.pth", small_state(),
                       state_pickle=dumps(collections.OrderedDict(small_state()), Crafted))
    assert "unexpected persistent record" in refused(path, torch_weights.UnsafeWeightsFile)


class RewrittenTensor(Tensor):
    """Pickles with a BUILD after the rebuild call, which sets attributes straight into the built object."""

    def __reduce__(self):
        return (*super().__reduce__(), {"shape": "abc"})


def test_a_pickle_cannot_rewrite_a_tensor_record_after_it_is_built(tmp_path):
    tensor = RewrittenTensor(Storage("0", np.zeros(2, np.float32)), 0, (2,), (1,))
    state = dumps(collections.OrderedDict(a=tensor), StatePickler)
    assert "BUILD" in [opcode.name for opcode, _, _ in pickletools.genops(state)]
    message = refused(legacy_file(tmp_path / "rebuilt.pth", {"a": tensor}, state), torch_weights.UnsafeWeightsFile)
    assert "sets attributes on a tensor or storage record" in message


@pytest.mark.parametrize("tensor, problem", [
    (Tensor(Storage("0", np.zeros(6, np.float32)), 0, (4, 2), (2, 1)), "reaches past the end of its storage"),
    (Tensor(Storage("0", np.zeros(6, np.float32)), 0, (2,), (-1,)), "negative"),
    (Tensor(Storage("0", np.zeros(6, np.float32)), 0, (1,), (2**70,)), "tensor 'a'"),
    (Tensor(Storage("0", np.zeros(6, np.float32)), 0, (0, 2**70), (1, 1)), "tensor 'a'"),
])
def test_a_tensor_record_that_does_not_fit_its_storage_is_refused(tmp_path, tensor, problem):
    path = legacy_file(tmp_path / "outside.pth", {"a": tensor})
    message = refused(path)
    assert problem in message and "not a readable torch weights file" in message


def test_a_storage_whose_count_disagrees_with_its_record_is_refused(tmp_path):
    path = legacy_file(tmp_path / "miscounted.pth", small_state(), storage_counts={"1": 3})
    assert "storage '1' holds 3 elements where its tensor record says 4" in refused(path)


CUT_SHORT = ("before the first storage", "inside a storage header", "in the middle of the storages", "one byte short")
CUT_IN_PICKLES = ("inside the magic number", "inside the state dict pickle", "inside the storage keys")


def cut_points(data: bytes) -> dict[str, int]:
    magic_end, _, _, state_end, keys_end = pickle_ends(data, 5)
    return {"inside the magic number": magic_end - 3, "inside the state dict pickle": state_end // 2,
            "inside the storage keys": keys_end - 5, "before the first storage": keys_end,
            "inside a storage header": keys_end + 4, "in the middle of the storages": (keys_end + len(data)) // 2,
            "one byte short": len(data) - 1}


@pytest.mark.parametrize("where", CUT_SHORT + CUT_IN_PICKLES)
def test_a_truncated_copy_of_the_real_file_is_cut_short(tmp_path, where):
    data = real_file().read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:cut_points(data)[where]])

    message = refused(path)

    assert "not a readable torch weights file" in message and "pip install --force-reinstall" in message
    if where in CUT_SHORT:
        assert "cut short" in message
    else:
        assert "truncated" in message or "Ran out of input" in message


def test_an_empty_file_a_zip_file_and_a_missing_file_are_refused_clearly(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert "cannot read the magic number" in refused(empty)

    archive = tmp_path / "new_format.pth"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("archive/data.pkl", dumps(collections.OrderedDict()))
    assert "zip archive (torch's newer format)" in refused(archive)

    assert "cannot read it" in refused(tmp_path / "absent.pth")

    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}, protocol=2))
    assert "magic number" in refused(plain)
