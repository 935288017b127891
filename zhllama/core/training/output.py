"""The output folder of a training run: checks, checkpoints and `--resume`, the final write, curves.

Layout of `--output OUT`:
- `OUT/checkpoints/checkpoint-N/`: Trainer checkpoints (what `--resume` continues from), each with
  `zhllama_progress.json` (task, tokens and seconds so far);
- the final artifacts (`adapter_model.safetensors` + `adapter_config.json`, or the full model with
  `--full`; tokenizer files; `train_summary.json`; `loss.png` and the task's curves) are written into
  a temporary folder and moved into OUT only after training succeeded, `train_summary.json` last. An
  interrupted run therefore leaves checkpoints but nothing that looks like a finished result.

`--resume` validates the checkpoint it reads (files, weights, the task and LoRA shape that wrote it)
before anything loads it: a corrupt or foreign checkpoint is a one-line error naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.paths import read_json

FINAL_FILES_LAST = "train_summary.json"
PROGRESS_FILE = "zhllama_progress.json"  # in each checkpoint: task, tokens and seconds so far (for --resume)
OVERRIDES_FILE = "zhllama_overrides.json"  # in a LoRA output: config changes `zhllama merge` applies

Points = list[tuple[int, float]]


def is_main() -> bool:
    """Global rank 0 (which writes every checkpoint and the final files)."""
    return int(os.environ.get("RANK", "0")) == 0


# ---- checks before anything is written ----------------------------------------------------------
def check_folder(cfg) -> None:
    """OUT may be used: not a file; with --resume it holds a complete checkpoint; else empty or --force."""
    out = cfg.output
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output path is an existing file")
    if cfg.resume:
        if not complete_checkpoints(out / "checkpoints"):
            raise UserError(f"{out}: --resume needs a complete checkpoint in {out / 'checkpoints'}, none found")
        return
    if out.is_dir() and any(out.iterdir()) and not cfg.force and not _only_empty_checkpoints(out):
        raise UserError(f"{out}: output directory exists and is not empty (use --force, or --resume)")


def _only_empty_checkpoints(out: Path) -> bool:
    entries = list(out.iterdir())
    return all(e.name == "checkpoints" and e.is_dir() and not complete_checkpoints(e) for e in entries)


def clear_output(cfg) -> None:
    """Empty OUT for a fresh run (after `check_folder`; global rank 0, which writes every checkpoint, does it)."""
    out = cfg.output
    if not cfg.resume and out.is_dir() and any(out.iterdir()) and is_main():
        shutil.rmtree(out)


def remove_if_no_checkpoint(out: Path, exc: BaseException | None = None) -> None:
    """After a failed run: remove what it created unless a checkpoint (something to resume) exists.
    A checkpoint left incomplete (a disk that filled while it was saved) is removed (reliab, issue 24)."""
    from zhllama.core.atomic import note_output
    from zhllama.core.errors import storage_failure

    if exc is not None and storage_failure(exc) is not None:
        note_output(exc, out)  # "zhllama: error: OUT: no space left on device"
    if not is_main() or not out.is_dir():
        return
    complete = complete_checkpoints(out / "checkpoints")
    for ckpt in (out / "checkpoints").glob("checkpoint-*"):
        if ckpt not in complete:
            shutil.rmtree(ckpt, ignore_errors=True)
    if complete:
        return
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and not any(p.name.startswith("checkpoint-") for p in ckpts.iterdir()):
        shutil.rmtree(ckpts, ignore_errors=True)
    if not any(out.iterdir()):
        out.rmdir()


# ---- checkpoints and --resume -------------------------------------------------------------------
def _step(ckpt: Path) -> int | None:
    tail = ckpt.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints whose trainer_state.json (written last by the Trainer) parses, oldest first."""
    found = []
    for ckpt in folder.glob("checkpoint-*") if folder.is_dir() else ():
        step = _step(ckpt)
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        if step is not None:
            found.append((step, ckpt))
    return [c for _, c in sorted(found)]


def resume_checkpoint(cfg, kind: str) -> Path:
    """The newest complete checkpoint, validated; newer incomplete ones (a kill mid-write) are removed."""
    folder = cfg.output / "checkpoints"
    complete = complete_checkpoints(folder)
    if not complete:
        raise UserError(f"{cfg.output}: --resume needs a complete checkpoint in {folder}, none found")
    newest = complete[-1]
    step = _step(newest)
    if is_main():
        for ckpt in folder.glob("checkpoint-*"):
            tail = _step(ckpt)
            if ckpt not in complete and (tail is None or tail > step):
                console.warn(
                    f"{ckpt}: incomplete checkpoint (no trainer_state.json) removed; resuming from {newest.name}"
                )
                shutil.rmtree(ckpt, ignore_errors=True)
    try:
        check_checkpoint(newest, cfg, kind)
    except UserError as exc:
        hint = f"; remove it to resume from {complete[-2].name}" if len(complete) > 1 else ""
        raise UserError(f"--resume: {newest}: {str(exc).removeprefix(f'{newest}: ')}{hint}") from exc
    return newest


def check_checkpoint(ckpt: Path, cfg, kind: str) -> None:
    """A checkpoint this run can continue: intact files, written by this task, the run's LoRA shape."""
    try:
        from zhllama.core.checkpoint.validate import validate_checkpoint_dir
    except ImportError:  # pragma: no cover - the validation module ships with zhllama
        validate_checkpoint_dir = _basic_checkpoint_check
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():  # the numpy RNG state the Trainer itself allows in rng_state.pth
        validate_checkpoint_dir(ckpt)
    state = read_json(ckpt / "trainer_state.json")  # validated above: a JSON object
    if state.get("global_step") != _step(ckpt):
        raise UserError(f"{ckpt / 'trainer_state.json'}: global_step does not match the folder name")
    progress = read_json(ckpt / PROGRESS_FILE, expect=None, optional=True)  # absent: before tasks were recorded
    written_by = progress.get("kind") if isinstance(progress, dict) else None
    if written_by is not None and written_by != kind:
        raise UserError(f"{ckpt}: a checkpoint of `zhllama {written_by}`, not of `zhllama {kind}`")
    adapter = ckpt / "adapter_config.json"
    if cfg.full:
        if adapter.is_file():
            raise UserError(f"{ckpt}: a LoRA checkpoint; this run trains the full model (--full)")
        return
    if not adapter.is_file():
        raise UserError(f"{ckpt}: no adapter_config.json (a --full checkpoint?); this run trains LoRA")
    saved = read_json(adapter)
    expected = _expected_lora(cfg)
    for key, want in expected.items():
        got = saved.get(key)
        if key == "target_modules":
            got = sorted(got) if isinstance(got, list | tuple) else got
        if got != want:
            raise UserError(f"{adapter}: {key} is {got}, this run's is {want} (a checkpoint of another run)")


def _expected_lora(cfg) -> dict:
    if cfg.adapter is not None:
        base = read_json(cfg.adapter / "adapter_config.json")
        targets = base.get("target_modules")
        return {"r": base.get("r"), "target_modules": sorted(targets) if isinstance(targets, list) else targets}
    return {"r": cfg.lora_rank, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.targets())}


def _basic_checkpoint_check(ckpt: Path) -> Path:
    for name in ("adapter_model.safetensors", "model.safetensors"):
        if (ckpt / name).is_file():
            from zhllama.core.checkpoint.safetensors_io import read_header

            try:
                read_header(ckpt / name)
            except (OSError, ValueError) as exc:
                raise UserError(f"{ckpt / name}: not a valid safetensors file ({exc})") from exc
    return ckpt


# ---- the final write ----------------------------------------------------------------------------
@contextlib.contextmanager
def final_files(out: Path, summary: dict) -> Iterator[Path]:
    """A temporary folder inside OUT for the final artifacts; when the block succeeds they move into
    OUT with `train_summary.json` (written from `summary`) last, so its presence means the run finished."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".final-", dir=out))
    try:
        yield tmp
        (tmp / FINAL_FILES_LAST).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
        names = sorted(p.name for p in tmp.iterdir() if p.name != FINAL_FILES_LAST) + [FINAL_FILES_LAST]
        for name in names:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    except BaseException as exc:  # e.g. a disk that fills during the final write (reliab, issue 24)
        shutil.rmtree(tmp, ignore_errors=True)
        remove_if_no_checkpoint(out, exc)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def history(log_history: list[dict], key: str) -> Points:
    """(step, value) of one logged quantity from the Trainer's log history (restored on --resume)."""
    return [(int(e["step"]), float(e[key])) for e in log_history if key in e and "step" in e]


def plot(path: Path, ylabel: str, series: list[tuple[str, Points, str | None]]) -> None:
    """One PNG of step curves: `series` is [(legend, points, marker)]; empty series are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, points, marker in series:
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
