"""`zhllama convert`: HF <-> Meta (`consolidated.NN.pth`) <-> TencentPretrain checkpoints.

Tensors are carried bit for bit (only q/k are permuted between rotary layouts, an exact index
shuffle), so HF -> X -> HF gives back the same weights. Everything is read and checked before
the output folder is created; the output is written through `atomic_dir`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from zhllama.core.atomic import atomic_dir
from zhllama.core.checkpoint import pth, rope_config, tencentpretrain
from zhllama.core.checkpoint.shards import iter_model, plan_shards, read_config, write_hf_shards
from zhllama.core.errors import UserError

FORMATS = ("hf", "meta", "tencentpretrain")
SHARD_LIMIT = 2 << 30


def find_tokenizer_model(folder: Path) -> Path:
    """tokenizer.model in the folder, or its parent (Meta's original download layout)."""
    for candidate in (folder / "tokenizer.model", folder.parent / "tokenizer.model"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{folder / 'tokenizer.model'}: missing (a {folder.name} checkpoint needs its SentencePiece model)")


def _read_foreign(src: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """(HF state dict, HF config, tokenizer.model) of a Meta or TencentPretrain folder."""
    from zhllama.core.spm import load_proto, special_id

    tokenizer = find_tokenizer_model(src)
    proto = load_proto(tokenizer)
    bos, eos = special_id(proto, "bos"), special_id(proto, "eos")
    if kind == "meta":
        state, params = pth.read_pth(src)
        config = pth.hf_config(params, state, rope_config.read_overrides(src), bos, eos)
    else:
        state, tp = tencentpretrain.read_tp(src)
        config = rope_config.apply_overrides(
            tencentpretrain.hf_config(tp, state, bos, eos), rope_config.read_overrides(src)
        )
    rows = state["model.embed_tokens.weight"].shape[0]
    if len(proto.pieces) > rows:
        raise UserError(f"{tokenizer}: {len(proto.pieces)} pieces but the checkpoint's embedding has {rows} rows")
    return state, config, tokenizer


def _write_hf(state: dict[str, torch.Tensor], config: dict, tokenizer: Path, out: Path) -> None:
    from zhllama.core.tokenizer import ZhTokenizer

    dtypes = {t.dtype for t in state.values()}
    if len(dtypes) != 1:
        raise UserError(f"checkpoint mixes dtypes {sorted(str(d) for d in dtypes)}; cannot write one HF dtype")
    dtype = dtypes.pop()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    write_hf_shards(iter(state.items()), shapes, dtype, out, SHARD_LIMIT)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id") if config.get(k) is not None}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    ZhTokenizer(tokenizer).save(out)


def convert(source: str | Path, output: str | Path, src: str, dst: str, force: bool = False) -> dict:
    """Convert the `src`-format checkpoint `source` into a `dst`-format folder `output`."""
    from zhllama.core.paths import check_output

    for option, value in (("--from", src), ("--to", dst)):
        if value not in FORMATS:
            raise UserError(f"{option}: '{value}' is not one of {', '.join(FORMATS)}")
    if src == dst:
        raise UserError(f"--from {src} --to {dst}: nothing to convert")
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"{source}: no such checkpoint folder")
    check_output(output, [source])
    if src == "hf":
        from zhllama.core.checkpoint.validate import validate_model_dir

        validate_model_dir(source)  # every file inside the folder, headers and pickles checked (reliab)
        config = read_config(source)
        plan_shards(source)  # every shard validated before writing
        tokenizer = source / "tokenizer.model"
        if not tokenizer.is_file():
            raise UserError(f"{tokenizer}: missing ({dst} checkpoints carry a SentencePiece tokenizer)")
        tensors = iter_model(source)
    else:
        state, config, tokenizer = _read_foreign(source, src)
        tensors = iter(state.items())
    count = {"tensors": 0}

    def counted():
        for item in tensors:
            count["tensors"] += 1
            yield item

    with atomic_dir(output, force=force) as tmp:
        if dst == "hf":
            _write_hf(dict(counted()), config, tokenizer, tmp)
        else:
            if dst == "meta":
                pth.write_pth(counted(), config, tmp)
            else:
                tencentpretrain.write_tp(counted(), config, tmp)
            shutil.copyfile(tokenizer, tmp / "tokenizer.model")
    return {
        "input": str(source),
        "output": str(output),
        "from": src,
        "to": dst,
        "tensors": count["tensors"],
        "rope": rope_config.describe(config),
    }
