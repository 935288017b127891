"""Read and write safetensors files one tensor at a time, validated as safetensors itself validates.

`safetensors.safe_open` memory-maps a whole file and `save_file` serialises a whole dict in
memory; for a low-memory merge both cost about a shard of RSS each. The format is simple (an
8-byte header length, a JSON header with dtype/shape/offsets, then raw little-endian bytes), so
knowing every output shape in advance lets us stream: read a tensor, transform it, write it.

The header is checked the way the safetensors library checks it before anything is read: the
header fits in the file, it is a JSON object, every dtype is known, every byte range matches its
shape, the ranges tile the data section exactly from 0 to its end (so a truncated file, or
offsets past the end, are refused), and every read returns exactly the bytes asked for.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from zhllama.core.errors import UserError

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
ITEM_SIZE = {name: torch.empty(0, dtype=dtype).element_size() for name, dtype in DTYPES.items()}
MAX_HEADER = 100_000_000  # the safetensors library's own limit
# Every dtype the safetensors format knows, in bits per element (validation of files zhllama only
# checks and hands to another loader: FP8, unsigned and sub-byte types included).
FORMAT_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"{path}: not a valid safetensors file ({why})")


def read_header(path: Path, any_dtype: bool = False) -> tuple[dict, int]:
    """The validated JSON header (without __metadata__) and the offset where tensor data starts.

    `any_dtype`: accept every dtype of the format (`FORMAT_BITS`), not only those this module reads."""
    known = FORMAT_BITS if any_dtype else {name: 8 * size for name, size in ITEM_SIZE.items()}
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise _bad(path, "shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER or 8 + length > size:
            raise _bad(path, f"header of {length} bytes does not fit in the file of {size} bytes")
        text = f.read(length)
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad(path, "header is not JSON") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    header.pop("__metadata__", None)
    data_len = size - 8 - length
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise _bad(path, f"tensor '{name}' lacks dtype/shape/data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in known:
            raise _bad(path, f"tensor '{name}' has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _bad(path, f"tensor '{name}' has a bad shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise _bad(path, f"tensor '{name}' has bad data_offsets {offsets!r}")
        bits = math.prod(shape) * known[dtype]
        if bits % 8 or offsets[1] - offsets[0] != bits // 8:
            raise _bad(path, f"tensor '{name}' byte range {offsets} does not match shape {shape} {dtype}")
        spans.append((offsets[0], offsets[1], name))
    expected = 0
    for begin, end, name in sorted(spans):
        if begin != expected:
            raise _bad(path, f"tensor '{name}' starts at byte {begin}, expected {expected}")
        expected = end
    if expected != data_len:
        raise _bad(path, f"tensors cover {expected} data bytes but the file holds {data_len} (truncated?)")
    return header, 8 + length


def ordered_names(header: dict) -> list[str]:
    """Tensor names in file order."""
    return sorted(header, key=lambda k: header[k]["data_offsets"][0])


def iter_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors in file order, each read with a plain file read (no memory map kept alive)."""
    header, start = read_header(path)
    with open(path, "rb") as f:
        for name in ordered_names(header):
            info = header[name]
            begin, end = info["data_offsets"]
            f.seek(start + begin)
            buffer = bytearray(end - begin)
            got = f.readinto(buffer)
            if got != len(buffer):
                raise _bad(path, f"tensor '{name}': read {got} of {len(buffer)} bytes (file changed or truncated)")
            dtype = DTYPES[info["dtype"]]
            tensor = torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
            yield name, tensor.reshape(info["shape"])


def shapes(path: Path) -> dict[str, tuple[int, ...]]:
    header, _ = read_header(path)
    return {name: tuple(header[name]["shape"]) for name in ordered_names(header)}


class StreamWriter:
    """Write a safetensors file whose tensors (names, dtypes, shapes) are declared up front."""

    def __init__(
        self, path: Path, entries: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict | None = None
    ):
        header: dict = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        self.expected = []
        for name, dtype, shape in entries:
            size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
            header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self.expected.append((name, dtype, tuple(shape)))
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.file.write(struct.pack("<Q", len(raw)) + raw)
        self.position = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected_name, dtype, shape = self.expected[self.position]
        if (name, tensor.dtype, tuple(tensor.shape)) != (expected_name, dtype, shape):
            raise ValueError(
                f"tensor {name} {tensor.dtype} {tuple(tensor.shape)} != declared {self.expected[self.position]}"
            )
        if tensor.numel():
            self.file.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))  # no extra copy
        self.position += 1

    def close(self) -> None:
        if self.position != len(self.expected):
            self.file.close()
            raise ValueError(f"{len(self.expected) - self.position} declared tensors were not written")
        self.file.close()
