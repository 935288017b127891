"""Where a model may come from: `resolve_model(spec) -> Path` for every command that reads one.

- an HF folder (config.json + weights) or a `.gguf` file: returned as is;
- a Meta checkpoint folder (`consolidated.NN.pth` + `params.json` + `tokenizer.model`) or a
  TencentPretrain folder (one `.bin` + TencentPretrain's llama config.json + `tokenizer.model`):
  converted once into an HF folder under the zhllama cache (`$ZHLLAMA_CACHE/converted`, default
  `~/.cache/zhllama/converted`), keyed by the source files' paths, sizes and times;
- a hub id `org/name` or `org/name@revision`: resolved through huggingface_hub's cache (`HF_HOME`,
  `HF_HUB_CACHE`); with `HF_HUB_OFFLINE=1` only the cache is consulted.
Every result is validated before it is returned (`checkpoint.validate`: config, index entries inside
the folder, every shard's header and size, pickles through weights_only, GGUF headers), so each
command that resolves a model refuses a bad one before loading or writing anything.
Errors are one line naming the file (or the id) at fault.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from zhllama.core.checkpoint import validate
from zhllama.core.errors import UserError

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[\w./-]+))?$")


def cache_root() -> Path:
    return Path(os.environ.get("ZHLLAMA_CACHE", Path.home() / ".cache" / "zhllama")) / "converted"


def kind_of(folder: Path) -> str | None:
    """'hf', 'meta', 'tencentpretrain' or None for a folder."""
    from zhllama.core.checkpoint import tencentpretrain

    config = folder / "config.json"
    if config.is_file():
        return "tencentpretrain" if tencentpretrain.is_tp_config(config) else "hf"
    if (folder / "params.json").is_file() or any(folder.glob("consolidated.*.pth")):
        return "meta"
    return None


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _converted(folder: Path, kind: str) -> Path:
    """The cached HF conversion of a Meta / TencentPretrain folder (converted on first use)."""
    from zhllama.core.checkpoint import convert

    files = [p for p in folder.iterdir() if p.is_file()]
    target = cache_root() / f"{kind}-{folder.resolve().name}-{_fingerprint(files)}"
    if not (target / "config.json").is_file():
        convert.convert(folder, target, src=kind, dst="hf", force=True)
    return validate.validate_model_dir(target)


def resolve_hub(spec: str) -> Path:
    """A hub id through huggingface_hub's cache (offline when HF_HUB_OFFLINE is set)."""
    match = HUB_ID.match(spec)
    if not match:
        raise UserError(f"{spec}: not a model folder, .gguf file or hub id (org/name[@revision])")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    repo, rev = match.group("repo"), match.group("rev")
    try:
        path = Path(snapshot_download(repo, revision=rev, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, HFValidationError):
        if constants.HF_HUB_OFFLINE:
            where = constants.HF_HUB_CACHE
            raise UserError(
                f"{spec}: no such folder, and not in the Hugging Face cache ({where}) with HF_HUB_OFFLINE set; "
                "download it first"
            ) from None
        try:
            path = Path(snapshot_download(repo, revision=rev))
        except Exception as exc:  # network, auth, unknown repo: all user-fixable
            reason = str(exc).splitlines()[0][:160]
            raise UserError(f"{spec}: cannot download from the Hugging Face hub ({reason})") from None
    if not (path / "config.json").is_file() and not list(path.glob("*.gguf")):
        raise UserError(f"{path}: the hub snapshot of {spec} has no config.json")
    if (path / "config.json").is_file():
        validate.validate_model_dir(path)
    return path


def resolve_model(spec: str | os.PathLike[str], folder_only: bool = False) -> Path:
    """An HF folder (or .gguf file unless `folder_only`) for any accepted model source."""
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            if folder_only:
                raise UserError(f"{path}: a GGUF file; this command needs an HF model folder")
            return validate.validate_gguf(path)
        if path.suffix == ".bin" and kind_of(path.parent) == "tencentpretrain":
            return _converted(path.parent, "tencentpretrain")
        raise UserError(f"{path}: not a model folder or .gguf file")
    if path.is_dir():
        kind = kind_of(path)
        if kind == "hf":
            return validate.validate_model_dir(path)
        if kind in ("meta", "tencentpretrain"):
            return _converted(path, kind)
        raise UserError(f"{path}: not a model folder (no config.json, and no consolidated.*.pth + params.json)")
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise UserError(f"{text}: no such model folder or file")
    return resolve_hub(text)
