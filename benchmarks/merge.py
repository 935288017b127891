"""`zhllama merge` vs PEFT on a synthetic ~1B-parameter fp16 LLaMA: wall time and peak RSS.

The base has 22 layers, hidden 2048, vocab 32000, in 1 GB safetensors shards; the adapter is
rank 64 on all projections with a 49953-row embed_tokens/lm_head (a Chinese-LLaMA-sized
vocabulary). Each contender runs in its own subprocess, which reports its own peak RSS. Goals:
peak RSS <= 0.35x PEFT's, wall <= 1.0x PEFT's, wall <= 2x a plain copy of the same bytes.
`ZHLLAMA_BENCH_SMALL=1` runs a ~100M model instead (a quick check of the harness).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = os.environ.get("ZHLLAMA_BENCH_SMALL") == "1"
LAYERS, HIDDEN, INTER, HEADS = (4, 512, 1376, 8) if SMALL else (22, 2048, 5632, 32)
VOCAB, NEW_VOCAB, RANK = 32000, 49953, 64
SHARD_BYTES = 1 << 30

# VmHWM is the child's own high-water mark (ru_maxrss would include the parent's at fork time)
REPORT = (
    "import sys; print('PEAK_RSS_KB', next(l.split()[1] for l in open('/proc/self/status') "
    "if l.startswith('VmHWM')), file=sys.stderr)"
)


def write_base(folder: Path) -> None:
    """Random fp16 weights written shard by shard (never the whole model in memory)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
                p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN),
                p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN),
                p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                p + "mlp.gate_proj.weight": (INTER, HIDDEN),
                p + "mlp.up_proj.weight": (INTER, HIDDEN),
                p + "mlp.down_proj.weight": (HIDDEN, INTER),
                p + "input_layernorm.weight": (HIDDEN,),
                p + "post_attention_layernorm.weight": (HIDDEN,),
            }
        )
    shapes.update({"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)})
    shards, current, size = [], {}, 0
    for key, shape in shapes.items():
        tensor = (torch.randn(shape, generator=gen) * 0.02).to(torch.float16)
        if current and size + tensor.numel() * 2 > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensor
        size += tensor.numel() * 2
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "dtype": "float16",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config))


def write_adapter(folder: Path, tokenizer: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from zhllama.core.tokenizer import ZhTokenizer

    folder.mkdir()
    gen = torch.Generator().manual_seed(1)
    state = {}
    dims = {
        "q_proj": (HIDDEN, HIDDEN),
        "k_proj": (HIDDEN, HIDDEN),
        "v_proj": (HIDDEN, HIDDEN),
        "o_proj": (HIDDEN, HIDDEN),
        "gate_proj": (INTER, HIDDEN),
        "up_proj": (INTER, HIDDEN),
        "down_proj": (HIDDEN, INTER),
    }
    for i in range(LAYERS):
        for module, (out_f, in_f) in dims.items():
            part = "self_attn" if module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            prefix = f"base_model.model.model.layers.{i}.{part}.{module}"
            state[f"{prefix}.lora_A.weight"] = (torch.randn(RANK, in_f, generator=gen) * 0.01).half()
            state[f"{prefix}.lora_B.weight"] = (torch.randn(out_f, RANK, generator=gen) * 0.01).half()
    state["base_model.model.model.embed_tokens.weight"] = (torch.randn(NEW_VOCAB, HIDDEN, generator=gen) * 0.02).half()
    state["base_model.model.lm_head.weight"] = (torch.randn(NEW_VOCAB, HIDDEN, generator=gen) * 0.02).half()
    save_file(state, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": RANK,
        "lora_alpha": 128,
        "lora_dropout": 0.05,
        "target_modules": list(dims),
        "modules_to_save": ["embed_tokens", "lm_head"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "base_model_name_or_path": "base",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    ZhTokenizer(tokenizer).save(folder)


def timed(code: str) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + "\n" + REPORT], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    return wall, peak * 1024


def main() -> dict:
    from zhllama.core import vocab
    from zhllama.core.assets import data_path

    root = Path(tempfile.mkdtemp(prefix="zhllama-bench-merge-", dir=os.environ.get("TMPDIR", "/tmp")))
    try:
        vocab.train([data_path("corpus_en.txt")], 400, root / "tok.model", byte_fallback=True)
        shared_sp = Path(__file__).resolve().parents[2] / "shared" / "data" / "tokenizers"
        if (shared_sp / "llama_tokenizer.model").is_file():  # the real 49953-piece Chinese-LLaMA vocabulary
            vocab.merge(shared_sp / "llama_tokenizer.model", [shared_sp / "chinese_sp.model"], root / "tok")
        else:
            raise SystemExit("benchmarks/merge needs ../shared/data/tokenizers (the 49953-piece vocabulary)")
        write_base(root / "base")
        write_adapter(root / "lora", root / "tok")
        size = sum(f.stat().st_size for f in (root / "base").iterdir())
        copy_wall, copy_peak = timed(f"import shutil; shutil.copytree({str(root / 'base')!r}, {str(root / 'copy')!r})")
        ours_wall, ours_peak = timed(
            "from zhllama.cli.app import run; import sys; "
            f"rc = run(['--quiet', 'merge', '--base', {str(root / 'base')!r}, '--lora', {str(root / 'lora')!r}, "
            f"'--output', {str(root / 'ours')!r}, '--shard-size', '1GB']); assert rc == 0, rc"
        )
        shutil.rmtree(root / "ours")
        peft_wall, peft_peak = timed(
            "import torch; from transformers import AutoModelForCausalLM; from peft import PeftModel\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(root / 'base')!r}, dtype=torch.float16)\n"
            f"m.resize_token_embeddings({NEW_VOCAB}, mean_resizing=False)\n"
            f"m = PeftModel.from_pretrained(m, {str(root / 'lora')!r}).merge_and_unload()\n"
            f"m.save_pretrained({str(root / 'peft')!r}, max_shard_size='1GB')"
        )
        result = {
            "base_bytes": size,
            "params": size // 2,
            "zhllama_wall_s": ours_wall,
            "zhllama_peak_rss": ours_peak,
            "peft_wall_s": peft_wall,
            "peft_peak_rss": peft_peak,
            "copy_wall_s": copy_wall,
            "rss_ratio_vs_peft": ours_peak / peft_peak,
            "wall_ratio_vs_peft": ours_wall / peft_wall,
            "wall_ratio_vs_copy": ours_wall / copy_wall,
        }
        print(
            f"base {size / 2**30:.2f} GiB: zhllama merge {ours_wall:.1f}s / {ours_peak / 2**30:.2f} GiB peak; "
            f"PEFT {peft_wall:.1f}s / {peft_peak / 2**30:.2f} GiB; plain copy {copy_wall:.1f}s"
        )
        print(
            f"peak RSS {result['rss_ratio_vs_peft']:.2f}x PEFT (goal <= 0.35x); wall {result['wall_ratio_vs_peft']:.2f}x "
            f"PEFT (goal <= 1.0x); wall {result['wall_ratio_vs_copy']:.2f}x copy (goal <= 2x)"
        )
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
