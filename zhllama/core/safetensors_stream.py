"""Read and write safetensors files one tensor at a time.

`safetensors.safe_open` memory-maps a whole file and `save_file` serialises a whole dict in
memory; for a low-memory merge both cost about a shard of RSS each. The format is simple (an
8-byte header length, a JSON header with dtype/shape/offsets, then raw little-endian bytes), so
knowing every output shape in advance lets us stream: read a tensor, transform it, write it.
"""

from __future__ import annotations

import json
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


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header (without __metadata__) and the offset where tensor data starts."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise UserError(f"{path}: not a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not a safetensors file (bad header)") from exc
    header.pop("__metadata__", None)
    return header, 8 + length


def iter_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors in file order, each read with a plain file read (no memory map kept alive)."""
    header, start = read_header(path)
    with open(path, "rb") as f:
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = info["data_offsets"]
            f.seek(start + begin)
            buffer = bytearray(end - begin)
            f.readinto(buffer)
            dtype = DTYPES[info["dtype"]]
            tensor = torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
            yield name, tensor.reshape(info["shape"])


def shapes(path: Path) -> dict[str, tuple[int, ...]]:
    header, _ = read_header(path)
    return {name: tuple(info["shape"]) for name, info in header.items()}


class StreamWriter:
    """Write a safetensors file whose tensors (names, dtypes, shapes) are declared up front."""

    def __init__(
        self, path: Path, entries: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict | None = None
    ):
        header: dict = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        self.expected = []
        for name, dtype, shape in entries:
            size = torch.Size(shape).numel() * torch.empty(0, dtype=dtype).element_size()
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
        self.file.write(tensor.contiguous().view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        self.position += 1

    def close(self) -> None:
        if self.position != len(self.expected):
            self.file.close()
            raise ValueError(f"{len(self.expected) - self.position} declared tensors were not written")
        self.file.close()
