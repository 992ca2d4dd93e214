"""Reading PyTorch `.pt` checkpoints (zip format) into numpy, without torch.

A checkpoint is untrusted input. Only plain containers, tensors and argparse namespaces are
accepted: the unpickler refuses every other class, so a checkpoint cannot run code while it is
read. Every size it declares (pickle lengths and memo indices, storage records, tensor
shapes, strides and offsets) is checked against the bytes the file holds before anything is
allocated, so reading a file needs memory proportional to the file; containers nested more
than `MAX_NESTING` deep or containing themselves are refused. Every problem is a ValueError
naming the file.
"""

from __future__ import annotations

import argparse
import collections
import io
import itertools
import math
import os
import pickle
import pickletools
import zipfile
from collections.abc import Iterable
from typing import Any

import ml_dtypes
import numpy as np

MAX_NESTING = 64  # containers inside containers; a training checkpoint needs about 5
# Tensors may share storages (views), but all of them together may not hold more than this
# many times the file's bytes: many tensors over one storage would multiply memory.
_TENSOR_BYTES_PER_FILE_BYTE = 4
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data by more than this
_MEMO_OPCODES = ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET")
_CONTAINERS = (dict, list, tuple, set, frozenset, argparse.Namespace)
_END = object()

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        if name not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported tensor storage type torch.{name}")
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _non_negative_ints(value: Any, what: str) -> tuple[int, ...]:
    if not (
        isinstance(value, tuple)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise pickle.UnpicklingError(f"tensor {what} must be integers >= 0, got {value!r:.200}")
    return value


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    del requires_grad, hooks, meta
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError(f"tensor data must be a storage, got {type(storage).__name__}")
    [offset] = _non_negative_ints((offset,), "offset")
    size, stride = _non_negative_ints(size, "size"), _non_negative_ints(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise pickle.UnpicklingError(
            f"tensor of size {size}, stride {stride} and offset {offset} reaches element {last} "
            f"of a storage of {storage.size} elements"
        )
    if math.prod(size) > storage.size:
        raise pickle.UnpicklingError(
            f"tensor of size {size} has more elements than its storage ({storage.size}); "
            "expanded (overlapping) tensors are not supported"
        )
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    del requires_grad, hooks
    return data


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int) -> bytes:
    """The bytes of one archive member, refused if it declares more than the file can hold."""
    expansion = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _MAX_DEFLATE_RATIO}
    if info.compress_type not in expansion:
        raise pickle.UnpicklingError(
            f"archive member {info.filename} uses compression method {info.compress_type}; "
            "only stored and deflated members are read"
        )
    if info.file_size > file_size * expansion[info.compress_type]:
        raise pickle.UnpicklingError(
            f"archive member {info.filename} declares {info.file_size} bytes, more than a "
            f"{file_size}-byte file can hold"
        )
    return archive.read(info)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, file_size: int):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._file_size = file_size
        self._storages: dict[str, np.ndarray] = {}
        self._tensor_bytes_left = _TENSOR_BYTES_PER_FILE_BYTE * file_size

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("argparse", "Namespace"): argparse.Namespace,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")

    def _rebuild_tensor(self, *args, **kwargs) -> np.ndarray:
        tensor = _rebuild_tensor(*args, **kwargs)
        self._tensor_bytes_left -= tensor.nbytes
        if self._tensor_bytes_left < 0:
            raise pickle.UnpicklingError(
                f"its tensors hold more than {_TENSOR_BYTES_PER_FILE_BYTE} times the file's "
                "bytes (many tensors over the same storage)"
            )
        return tensor

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.200}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage {key!r:.100} has no torch storage type")
        [numel] = _non_negative_ints((numel,), "storage size")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
        storage = self._storages[key]
        if storage.dtype != storage_type.dtype or numel > storage.size:
            raise pickle.UnpicklingError(
                f"storage {key} is used as {numel} {storage_type.dtype} elements and as "
                f"{storage.size} {storage.dtype} elements"
            )
        return storage[:numel]

    def _read_storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self._prefix}/data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key} ({name}) is missing") from None
        if numel * dtype.itemsize > info.file_size:
            raise pickle.UnpicklingError(
                f"storage {key} declares {numel} {dtype} elements ({numel * dtype.itemsize} "
                f"bytes) but {name} holds {info.file_size} bytes"
            )
        raw = _read_member(self._archive, info, self._file_size)
        return np.frombuffer(raw, dtype=dtype, count=numel)


def _check_opcodes(data: bytes) -> None:
    """Refuses a pickle that is truncated or whose memo indices could exhaust memory."""
    for count, (opcode, arg, _) in enumerate(pickletools.genops(data)):
        if opcode.name in _MEMO_OPCODES and arg > count:
            raise pickle.UnpicklingError(f"pickle memo index {arg} at opcode {count} is invalid")


def _children(node: Any) -> Iterable[Any]:
    if isinstance(node, dict):
        return itertools.chain(node.keys(), node.values())
    if isinstance(node, argparse.Namespace):
        return vars(node).values()
    return node


def _check_nesting(root: Any) -> None:
    """Refuses containers nested more than MAX_NESTING deep or containing themselves.

    Iterative and visiting each container once, so neither deep nor widely shared structures
    cost more than their size.
    """
    if not isinstance(root, _CONTAINERS):
        return
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[list[Any]] = []  # [container, iterator over its children, max child height]

    def enter(node: Any) -> None:
        if len(stack) >= MAX_NESTING:
            raise pickle.UnpicklingError(f"containers are nested more than {MAX_NESTING} deep")
        on_path.add(id(node))
        stack.append([node, iter(_children(node)), 0])

    enter(root)
    while stack:
        frame = stack[-1]
        child = next(frame[1], _END)
        if child is _END:
            stack.pop()
            on_path.discard(id(frame[0]))
            heights[id(frame[0])] = height = frame[2] + 1
            if stack:
                stack[-1][2] = max(stack[-1][2], height)
        elif isinstance(child, _CONTAINERS):
            if id(child) in on_path:
                raise pickle.UnpicklingError("a container contains itself")
            if id(child) in heights:
                if len(stack) + heights[id(child)] > MAX_NESTING:
                    raise pickle.UnpicklingError(
                        f"containers are nested more than {MAX_NESTING} deep"
                    )
                frame[2] = max(frame[2], heights[id(child)])
            else:
                enter(child)


def _refuse_non_zip(path: str) -> None:
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(b"PK"):
        raise ValueError(f"{path} is a damaged or truncated zip archive")
    if head.startswith(b"\x80"):
        raise ValueError(
            f"{path} is a legacy (torch < 1.6) checkpoint, which is not supported; re-save it "
            "with torch >= 1.6: torch.save(torch.load(old), new)"
        )
    raise ValueError(
        f"{path} is not a PyTorch checkpoint: neither a zip archive (torch >= 1.6) nor a "
        "legacy torch.save file"
    )


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """The object saved by `torch.save` at `path`, with every tensor as a numpy array.

    Raises ValueError naming the file and the problem for anything but a well-formed
    checkpoint of containers, tensors and argparse namespaces.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        _refuse_non_zip(path)
    file_size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [i for i in archive.infolist() if i.filename.endswith("/data.pkl")]
            if len(pickles) != 1:
                names = [i.filename for i in pickles]
                raise pickle.UnpicklingError(f"expected one data.pkl in the archive, found {names}")
            prefix = pickles[0].filename[: -len("/data.pkl")]
            data = _read_member(archive, pickles[0], file_size)
            _check_opcodes(data)
            loaded = _RestrictedUnpickler(io.BytesIO(data), archive, prefix, file_size).load()
        _check_nesting(loaded)
        return loaded
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: {error}") from error
    except RecursionError as error:
        raise ValueError(f"{path}: containers are nested too deeply") from error
    except (
        zipfile.BadZipFile,
        EOFError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        ValueError,
    ) as error:
        raise ValueError(
            f"{path}: malformed checkpoint ({type(error).__name__}: {error})"
        ) from error
