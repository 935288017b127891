"""AWQ through llm-compressor (`AWQModifier` + `oneshot`): a compressed-tensors checkpoint.

The output is what vLLM and SGLang load for AWQ/W4A16 models (`quantization_config.quant_method:
compressed-tensors`, int weights packed into int32, one fp scale per group), and transformers
loads it with `AutoModelForCausalLM.from_pretrained` when compressed-tensors is installed
(decompressed to full precision on CPU).

Measured here (llm-compressor 0.14.0.1, compressed-tensors 0.19.0, torch 2.13 CPU, transformers 5.24):
- llm-compressor 0.14.0.1 declares `transformers<=5.17.0`; its AWQ runs with transformers 5.24, so
  it is installed with `--no-deps` (the `awq` extra holds its other requirements).
- its AWQ pins the cached activations in memory unconditionally (`IntermediatesCache.pin_memory`),
  which raises "Cannot access accelerator device when none is available" on CPU-only torch; on a
  machine without an accelerator that step is skipped (pinning only speeds host-to-GPU copies).
- asymmetric schemes (with zero points) save, but transformers 5.24 cannot load them back (packed
  zero-point shapes mismatch), so the scheme is symmetric (W4A16 / W8A16, llm-compressor's presets).
- time is AWQ's grid search: per layer group and per ratio tried (`--n-grid`) one forward of every
  calibration sample through the group. SmolLM2-135M (30 layers) with 16 x 128 tokens and
  `--n-grid 10` on 2 shared CPU cores: ~2 min when they are quiet, 13 min when busy (~4 to 25 s a layer);
  with 64 x 256 tokens and the default 20 ratios (session 3) it did not finish in an hour.
- llm-compressor shuffles the calibration samples with torch's global RNG unless told not to; the
  samples are already chosen here, so the order is kept (runs are repeatable).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.plugin_api import QuantizerPlugin
from zhllama.core.schema import option

LINEAR_SUFFIXES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INSTALL_HINT = "pip install 'zhllama[awq]' && pip install --no-deps llmcompressor==0.14.0.1"


@dataclass
class AWQOptions:
    calibration: Path | None = option(
        None, "Calibration text, one sample per line (default: the Chinese + English text shipped with zhllama)."
    )
    bits: int = option(4, "Weight bits: 4 (W4A16) or 8 (W8A16); activations stay 16/32-bit.")
    group_size: int = option(128, "Weights per scale group (must divide every linear layer's in-features).")
    samples: int = option(128, "Number of calibration samples (lines).")
    max_length: int = option(512, "Tokens per calibration sample (longer lines are cut).")
    n_grid: int = option(
        20, "Scale ratios AWQ tries per layer group (its grid search; fewer is faster, the scales a little worse)."
    )


def calibration_lines(path: Path | None) -> list[str]:
    from zhllama.core.assets import data_path
    from zhllama.core.quantize.imatrix import DEFAULT_CALIBRATION

    if path is None:
        text = "\n".join(data_path(name).read_text(encoding="utf-8") for name in DEFAULT_CALIBRATION)
    else:
        from zhllama.core.paths import read_text_file

        text = read_text_file(path)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"--calibration: {path}: text file is empty")
    return lines


@contextlib.contextmanager
def cpu_safe_pinning():
    """Skip llm-compressor's `pin_memory` of cached activations where no accelerator exists (see above)."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


class AWQ(QuantizerPlugin):
    name = "awq"
    description = "AWQ W4A16/W8A16 through llm-compressor (compressed-tensors: vLLM's format)"
    requires = ("llmcompressor", "compressed_tensors")
    install_hint = INSTALL_HINT
    Options = AWQOptions

    def validate(self, model: Path, options: AWQOptions) -> None:
        from zhllama.core.checkpoint.shards import plan_shards, read_config

        if options.bits not in (4, 8):
            raise UserError(f"--bits: {options.bits} is not 4 or 8")
        for flag, value, least in (
            ("--group-size", options.group_size, 1),
            ("--samples", options.samples, 1),
            ("--n-grid", options.n_grid, 2),
        ):
            if value < least:
                raise UserError(f"{flag}: {value} must be at least {least}")
        if options.max_length < 2:
            raise UserError(f"--max-length: {options.max_length} must be at least 2")
        calibration_lines(options.calibration)
        config = read_config(model)
        if config.get("model_type") != "llama":
            raise UserError(f"{model}: architecture '{config.get('model_type')}' is not supported (llama only)")
        for key, shape in plan_shards(model).items():
            module = key.rsplit(".", 2)
            if key.endswith(".weight") and len(module) == 3 and module[1] in LINEAR_SUFFIXES:
                if shape[1] % options.group_size:
                    divisors = [g for g in (128, 64, 32, 16) if shape[1] % g == 0]
                    hint = f" (try --group-size {divisors[0]})" if divisors else ""
                    raise UserError(
                        f"--group-size {options.group_size}: does not divide the {shape[1]} in-features of "
                        f"{key} in {model}{hint}"
                    )

    def quantize(self, model: Path, output: Path, options: AWQOptions) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from zhllama.core.tokenizer import ZhTokenizer

        tok = ZhTokenizer(model)
        ids = [tok.encode(line, bos=True)[: options.max_length] for line in calibration_lines(options.calibration)]
        ids = [row for row in ids if len(row) > 1][: options.samples]
        if not ids:
            raise UserError(f"--calibration: {options.calibration}: no line has 2 or more tokens")
        with contextlib.redirect_stdout(sys.stderr):  # llm-compressor logs on stdout; keep it for --json
            from llmcompressor.logger import LOGGER_CONFIG, configure_logger

            configure_logger(LOGGER_CONFIG)  # its console sink is the sys.stdout of that moment: stderr now
            from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
            from datasets import Dataset
            from llmcompressor import oneshot
            from llmcompressor.modifiers.quantization import QuantizationModifier
            from llmcompressor.modifiers.transform.awq import AWQModifier  # the transform; quantized below

            loaded = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32, trust_remote_code=False)
            dataset = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]})
            weights = QuantizationArgs(
                num_bits=options.bits, type="int", symmetric=True, strategy="group", group_size=options.group_size
            )
            scheme = QuantizationScheme(targets=["Linear"], weights=weights)
            recipe = [
                AWQModifier(n_grid=options.n_grid),
                QuantizationModifier(ignore=["lm_head"], config_groups={"group_0": scheme}),
            ]
            with cpu_safe_pinning():
                oneshot(
                    model=loaded,
                    processor=tok.hf,
                    dataset=dataset,
                    recipe=recipe,
                    max_seq_length=options.max_length,
                    num_calibration_samples=len(ids),
                    shuffle_calibration_samples=False,  # its shuffle draws on torch's global RNG: runs differed
                )
            loaded.save_pretrained(str(output), save_compressed=True)
        tok.save(output)
