"""One validation step for model files, run before anything loads them (every loading path).

- `validate_model_dir(folder)`: an HF model folder. `config.json` is a JSON object; every weight file
  that a loader may read (`model.safetensors`, `pytorch_model.bin`, both indexes and every shard they
  name) is checked: index entries must name files inside the folder (after following symlinks; a
  Hugging Face cache snapshot may point into its own `blobs/`), safetensors headers are checked
  against the file size as the safetensors library does (`safetensors_io.read_header`, any dtype the
  format knows), an index's tensors must be in the shard it names, and pickles (`.bin`) must load
  with `torch.load(weights_only=True)`.
- `validate_adapter_dir(folder)`: a PEFT adapter folder (`adapter_config.json` + weights), same checks.
- `validate_gguf(path)`: a GGUF file's header (magic, version, metadata, tensor table) and that every
  tensor's bytes lie inside the file.
- `validate_checkpoint_dir(folder)`: a Trainer `checkpoint-N` folder before `--resume` reads it.
- `load_pickle(path)`: the one `torch.load(..., weights_only=True)`; a refused pickle becomes one line
  naming the file, why it was refused and what to do.

Every failure is a `UserError` (exit 2) naming the file at fault.
"""

from __future__ import annotations

import math
import mmap
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.paths import read_json

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
MODEL_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")

# How to fix a pickle that `weights_only=True` refuses.
PICKLE_HINT = (
    "zhllama never runs code from a checkpoint; if you trust its source, convert it to safetensors "
    "(safetensors.torch.save_file(torch.load(FILE, weights_only=False), NEW)) or use a safetensors "
    "release of the model"
)


def _safetensors_name(path: Path) -> Path:
    """Where a converted pickle goes: pytorch_model*.bin -> model*.safetensors, else NAME.safetensors."""
    stem = path.stem.replace("pytorch_model", "model", 1) if path.stem.startswith("pytorch_model") else path.stem
    return path.with_name(stem + ".safetensors")


# ---- containment --------------------------------------------------------------------------------
def _root_of(folder: Path) -> Path:
    """The folder files may resolve into: the folder itself, or for a Hugging Face cache snapshot
    (`models--org--name/snapshots/REV`, files symlinked into `../../blobs/`) the repository's cache."""
    real = folder.resolve()
    if real.parent.name == "snapshots" and (real.parent.parent / "blobs").is_dir():
        return real.parent.parent
    return real


def inside(path: Path, folder: Path, what: str | None = None, root: Path | None = None) -> Path:
    """`path` (a file of `folder`), refused when it or its symlink target lies outside the folder."""
    root = root or _root_of(folder)
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        shown = f"{what} " if what else ""
        via = f" (through a symlink to {real})" if os.path.realpath(path) != os.path.abspath(path) else ""
        raise UserError(
            f"{path}: {shown}lies outside the model folder {folder}{via}; "
            "zhllama reads nothing outside the folder it is given (copy the file into it)"
        )
    return path


def _entry(index: Path, folder: Path, tensor: str, name: object, root: Path) -> Path:
    if not isinstance(name, str) or not name:
        raise UserError(f"{index}: weight_map entry '{tensor}' is not a file name")
    path = folder / name
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        via = " (through a symlink)" if str(real) != os.path.normpath(os.path.abspath(path)) else ""
        raise UserError(
            f"{index}: weight_map entry '{tensor}' names '{name}', which resolves{via} to {real} outside the model "
            f"folder {folder}; zhllama reads nothing outside the folder it is given"
        )
    if not path.is_file():
        raise UserError(f"{index}: names shard '{name}', which does not exist")
    return path


# ---- pickles ------------------------------------------------------------------------------------
_REFUSED = (re.compile(r"GLOBAL ([\w.]+[\w])"), re.compile(r"Unsupported operand (\S+)"))


def _pickle_refused(path: Path, exc: BaseException) -> UserError:
    found = next((m for m in (p.search(str(exc)) for p in _REFUSED) if m), None)
    why = f"it asks for {found.group(1)}" if found else "it holds more than tensors"
    return UserError(
        f"{path}: refused by torch.load(weights_only=True): {why}, which plain weights never need; "
        + PICKLE_HINT.replace("FILE", repr(str(path))).replace("NEW", repr(str(_safetensors_name(path))))
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def load_pickle(path: Path, mmap_ok: bool = False, flat: bool = True):
    """`torch.load(path, weights_only=True)` on CPU. A pickle that needs more than tensors, or a
    corrupt file, is a one-line UserError naming the file. `mmap_ok`: memory-map the tensors (no
    data read; checks a large file cheaply); `flat`: the result must be a dict of tensors."""
    import torch

    try:
        with open(path, "rb"):  # a missing/unreadable file: its own message
            pass
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap_ok)
        except RuntimeError as exc:
            if not mmap_ok or "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise _pickle_refused(path, exc) from None
        raise UserError(f"{path}: not a PyTorch checkpoint (pickle: {_first_line(exc)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"{path}: cannot be read as a PyTorch checkpoint ({_first_line(exc)})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or _first_line(exc)})") from None
    if flat and (not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values())):
        raise UserError(f"{path}: not a flat dict of tensors (a weights file holds name -> tensor)")
    return state


def check_pickle(path: Path, flat: bool = True) -> set[str]:
    """Validate a pickled weights file without reading its tensor data; its tensor names."""
    state = load_pickle(path, mmap_ok=True, flat=flat)
    return set(state) if flat else set()


# ---- safetensors --------------------------------------------------------------------------------
def check_safetensors(path: Path) -> set[str]:
    """Validate a safetensors file's header against its size (any dtype); its tensor names."""
    from zhllama.core.checkpoint import safetensors_io

    header, _ = safetensors_io.read_header(path, any_dtype=True)
    return set(header)


def _check_weights(path: Path) -> set[str]:
    return check_safetensors(path) if path.suffix == ".safetensors" else check_pickle(path)


def _index_map(index: Path, folder: Path, root: Path | None = None) -> dict[Path, list[str]]:
    """shard -> its tensors, from an index whose every entry is a file inside `folder`."""
    root = root or _root_of(folder)
    weight_map = read_json(inside(index, folder, root=root)).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(f"{index}: no 'weight_map'")
    by_file: dict[Path, list[str]] = {}
    for tensor, name in weight_map.items():
        by_file.setdefault(_entry(index, folder, tensor, name, root), []).append(tensor)
    return by_file


def index_files(index: Path, folder: Path) -> list[Path]:
    """The shards an index names (sorted by name), each an existing file inside `folder`."""
    return sorted(_index_map(index, folder), key=str)


def _check_index(index: Path, folder: Path, root: Path) -> None:
    for shard, tensors in _index_map(index, folder, root).items():
        found = _check_weights(shard)
        missing = [t for t in tensors if t not in found]
        if missing:
            raise UserError(
                f"{index}: tensor '{missing[0]}' is not in {shard.name}, the shard it names ({len(missing)} missing)"
            )


# ---- folders ------------------------------------------------------------------------------------
def _folder(path: str | os.PathLike[str], what: str) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise UserError(f"{folder}: no such {what} folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected a {what} folder)")
    return folder


def validate_model_dir(path: str | os.PathLike[str]) -> Path:
    """Check an HF model folder before anything loads it (see the module doc); returns it."""
    folder = _folder(path, "model")
    root = _root_of(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"{folder}: not a model folder (no config.json)")
    read_json(inside(config, folder, root=root))
    found = False
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = folder / index_name
        if index.is_file():
            _check_index(index, folder, root)
            found = True
    for name in MODEL_WEIGHTS:
        weights = folder / name
        if weights.is_file():
            _check_weights(inside(weights, folder, root=root))
            found = True
    if not found:
        raise UserError(
            f"{folder}: no model weights (model.safetensors, pytorch_model.bin, or an index naming the shards)"
        )
    return folder


def validate_adapter_dir(path: str | os.PathLike[str]) -> Path:
    """Check a PEFT adapter folder (adapter_config.json + adapter weights) before loading it."""
    folder = _folder(path, "adapter")
    root = _root_of(folder)
    config = folder / "adapter_config.json"
    if not config.is_file():
        raise UserError(f"{folder}: not a PEFT adapter folder (no adapter_config.json)")
    read_json(inside(config, folder, root=root))
    weights = [folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise UserError(f"{folder}: no adapter_model.safetensors or adapter_model.bin")
    for file in weights:
        if not _check_weights(inside(file, folder, root=root)):
            raise UserError(f"{file}: holds no tensors")
    return folder


TRAINER_PICKLES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")


def validate_checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """Check a Trainer checkpoint folder (`checkpoint-N`) before `--resume` reads it: the model or
    adapter it holds, `trainer_state.json`, and the optimizer/scheduler/RNG pickles (weights_only)."""
    folder = _folder(path, "checkpoint")
    state = folder / "trainer_state.json"
    if not state.is_file():
        raise UserError(f"{folder}: not a training checkpoint (no trainer_state.json)")
    data = read_json(inside(state, folder))
    if not isinstance(data.get("global_step"), int) or isinstance(data.get("global_step"), bool):
        raise UserError(f"{state}: 'global_step' missing or not an integer")
    if (folder / "adapter_config.json").is_file():
        validate_adapter_dir(folder)
    elif (folder / "config.json").is_file():
        validate_model_dir(folder)
    for file in sorted(folder.iterdir()):
        if file.name in TRAINER_PICKLES or re.fullmatch(r"rng_state_\d+\.pth", file.name):
            check_pickle(inside(file, folder), flat=False)
    return folder


# ---- GGUF ---------------------------------------------------------------------------------------
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
GGUF_DEFAULT_ALIGNMENT = 32
# ggml type id -> (elements per block, bytes per block), as llama.cpp's ggml.h / gguf-py's GGML_QUANT_SIZES.
GGML_BLOCKS = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _GGUFReader:
    def __init__(self, path: Path, data):
        self.path, self.data, self.pos = path, data, 0

    def bad(self, why: str) -> UserError:
        return UserError(f"{self.path}: not a valid GGUF file ({why})")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.bad(
                f"{what} at byte {self.pos} runs past the end of the file ({len(self.data)} bytes; truncated?)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def scalar(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = self.take(self.scalar("<Q", what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"{what} is not UTF-8") from None

    def value(self, kind: int, key: str, depth: int = 0):
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind], f"value of '{key}'")
        if kind == _STRING:
            return self.string(f"value of '{key}'")
        if kind == _ARRAY and depth == 0:
            item = self.scalar("<I", f"array type of '{key}'")
            count = self.scalar("<Q", f"array length of '{key}'")
            if item in _SCALARS:  # skip fixed-size items in one step
                self.take(count * struct.calcsize(_SCALARS[item]), f"array '{key}'")
                return None
            if item == _STRING:
                for _ in range(count):
                    self.take(self.scalar("<Q", f"array '{key}'"), f"array '{key}'")
                return None
            raise self.bad(f"array '{key}' has item type {item}")
        raise self.bad(f"key '{key}' has unknown value type {kind}")


def validate_gguf(path: str | os.PathLike[str]) -> Path:
    """Check a GGUF file's header and tensor table against its size before llama.cpp maps it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    if size < 24:
        raise UserError(f"{path}: not a valid GGUF file ({size} bytes; truncated?)")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        r = _GGUFReader(path, data)
        if r.take(4, "magic") != GGUF_MAGIC:
            raise r.bad("no GGUF magic at the start")
        version = r.scalar("<I", "version")
        if version not in GGUF_VERSIONS:
            raise r.bad(f"version {version}; llama.cpp reads versions 2 and 3 (convert the model again)")
        n_tensors, n_kv = r.scalar("<Q", "tensor count"), r.scalar("<Q", "metadata count")
        if n_tensors > size // 24 or n_kv > size // 12:
            raise r.bad(f"{n_tensors} tensors / {n_kv} metadata keys do not fit in {size} bytes")
        alignment = GGUF_DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = r.string("metadata key")
            value = r.value(r.scalar("<I", f"type of '{key}'"), key)
            if key == "general.alignment":
                if not isinstance(value, int) or value <= 0 or value & (value - 1):
                    raise r.bad(f"general.alignment {value!r} is not a power of two")
                alignment = value
        tensors = []
        for _ in range(n_tensors):
            name = r.string("tensor name")
            n_dims = r.scalar("<I", f"dimensions of '{name}'")
            if n_dims > 8:
                raise r.bad(f"tensor '{name}' has {n_dims} dimensions")
            dims = [r.scalar("<Q", f"shape of '{name}'") for _ in range(n_dims)]
            kind = r.scalar("<I", f"type of '{name}'")
            offset = r.scalar("<Q", f"offset of '{name}'")
            if kind not in GGML_BLOCKS:
                raise r.bad(f"tensor '{name}' has unknown ggml type {kind}")
            block, nbytes = GGML_BLOCKS[kind]
            count = math.prod(dims)
            if dims and dims[0] % block:
                raise r.bad(f"tensor '{name}' row of {dims[0]} is not a multiple of its block size {block}")
            tensors.append((name, offset, count // block * nbytes))
        start = -(-r.pos // alignment) * alignment
        for name, offset, nbytes in tensors:
            if offset % alignment:
                raise r.bad(f"tensor '{name}' offset {offset} is not aligned to {alignment}")
            if start + offset + nbytes > size:
                raise r.bad(
                    f"tensor '{name}' ends at byte {start + offset + nbytes}, past the end of the file "
                    f"({size} bytes; truncated?)"
                )
    return path


def validate_source(path: str | os.PathLike[str]) -> Path:
    """`validate_gguf` for a `.gguf` file, else `validate_model_dir`."""
    path = Path(path)
    return validate_gguf(path) if path.is_file() and path.suffix == ".gguf" else validate_model_dir(path)
