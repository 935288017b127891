"""Trainer callbacks: a Rich progress bar with loss and tokens/s, and the loss history for plots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from zhllama.core import console
from zhllama.core.training.output import PROGRESS_FILE


class ProgressCallback(TrainerCallback):
    """Counts trained tokens (non-padding inputs) and shows step, loss and tokens/s."""

    def __init__(self, kind: str = ""):
        self.kind = kind  # recorded in every checkpoint: --resume refuses another task's
        self.tokens = 0
        self.earlier_seconds = 0.0  # training time before a --resume
        self.earlier_tokens = 0
        self.start = None
        self.losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[int, float]] = []
        self._progress = None
        self._task = None

    def count_batch(self, num_tokens: int) -> None:
        """Add one batch's real (non-padding) input tokens, as counted by the collator."""
        self.tokens += num_tokens

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        if state.is_world_process_zero:
            self._progress = console.make_progress(
                console.TextColumn("loss {task.fields[loss]} · {task.fields[tps]} tok/s")
            )
            self._progress.start()
            self._task = self._progress.add_task("training", total=state.max_steps, loss="-", tps="-")

    def restore(self, path: Path, main: bool) -> None:
        """Continue the counts saved in a checkpoint (the token count is global: kept by rank 0 only)."""
        try:
            saved = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return  # a checkpoint from before this file existed: the summary covers the resumed part
        self.tokens = self.earlier_tokens = int(saved.get("tokens", 0)) if main else 0
        self.earlier_seconds = float(saved.get("seconds", 0.0))

    def seconds(self) -> float:
        """Training time of the whole run, earlier (resumed) parts included."""
        return self.earlier_seconds + (time.perf_counter() - self.start if self.start else 0.0)

    def on_save(self, args, state, control, **kwargs):
        """Record tokens (summed over ranks) and seconds so far in the checkpoint just written."""
        import torch

        tokens = self.tokens

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            total = torch.tensor([tokens], dtype=torch.long)
            torch.distributed.all_reduce(total)
            tokens = int(total.item())
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                tmp = folder / f".{PROGRESS_FILE}.{os.getpid()}"
                tmp.write_text(
                    json.dumps(
                        {"kind": self.kind, "tokens": tokens, "seconds": self.seconds(), "step": state.global_step}
                    )
                )
                os.replace(tmp, folder / PROGRESS_FILE)

    def tokens_per_second(self) -> float:
        elapsed = time.perf_counter() - self.start if self.start else 0.0
        return (self.tokens - self.earlier_tokens) / elapsed if elapsed > 0 else 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step, tps=f"{self.tokens_per_second():,.0f}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))
            if self._progress is not None:
                self._progress.update(self._task, loss=f"{logs['loss']:.4f}")
        if "eval_loss" in logs:
            self.eval_losses.append((state.global_step, float(logs["eval_loss"])))

    def on_train_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.stop()
