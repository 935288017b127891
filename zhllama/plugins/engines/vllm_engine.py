"""The vLLM engine: HF model folders through vLLM's offline `LLM` API (GPU machines only).

vLLM runs its own sampler, so this engine maps `GenerationParams` onto `SamplingParams` (EOS,
stop ids and stop strings included) instead of using zhllama's loop, and its `generate` yields
the ids once vLLM has finished the request (the offline API does not stream).
`next_token_logits` returns full-vocabulary log-probabilities: they differ from logits by a
constant per row, so softmax and argmax over them are the same. Untested on the CPU CI machine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from zhllama.core.engine import GenerationParams, LoadedModel
from zhllama.core.errors import UserError
from zhllama.core.generation.sampling import is_greedy
from zhllama.core.generation.stopping import Stopper, stop_ids, stop_strings
from zhllama.core.loading.options import ModelOptions
from zhllama.core.plugin_api import EnginePlugin


class VLLMEngine(EnginePlugin):
    name = "vllm"
    description = "HF model folders through vLLM (needs vllm and a GPU)"
    requires = ("vllm",)
    install_hint = "pip install 'zhllama[vllm]' (Linux with a CUDA GPU)"

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return Path(path).is_dir() and (Path(path) / "config.json").is_file()

    @classmethod
    def load(cls, path: Path, options: ModelOptions) -> VLLMModel:
        return VLLMModel.load(Path(path), options)


class VLLMModel(LoadedModel):
    def __init__(self, llm, tokenizer, context_length: int, loras: Sequence[str]):
        self.llm = llm
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.lora_request = None
        if loras:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("lora0", 1, str(loras[0]))

    @classmethod
    def load(cls, path: Path, options: ModelOptions) -> VLLMModel:
        from vllm import LLM

        from zhllama.core.tokenizer import ZhTokenizer

        if options.rope_scaling:
            raise UserError("--rope-scaling: use the transformers engine (vLLM reads rope_scaling from config.json)")
        if len(options.lora) > 1:
            raise UserError("--lora: the vLLM engine applies one adapter; merge the others first (zhllama merge)")
        tokenizer = ZhTokenizer(path)
        kwargs = {
            "model": str(path),
            "trust_remote_code": False,
            "dtype": options.dtype or "auto",
            "max_logprobs": len(tokenizer),
            "enable_lora": bool(options.lora),
        }
        if options.context_length:
            kwargs["max_model_len"] = options.context_length
        if options.load == "4bit":
            kwargs["quantization"] = "bitsandbytes"
        elif options.load:
            raise UserError(f"--load: the vLLM engine supports 4bit (bitsandbytes) only, got '{options.load}'")
        llm = LLM(**kwargs)
        context = llm.llm_engine.model_config.max_model_len
        return cls(llm, tokenizer, context, options.lora)

    def _run(self, batch: Sequence[Sequence[int]], sampling):
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(seq)) for seq in batch]
        return self.llm.generate(prompts, sampling, lora_request=self.lora_request, use_tqdm=False)

    def next_token_logits(self, batch: Sequence[Sequence[int]]):
        import torch
        from vllm import SamplingParams

        vocab = len(self.tokenizer)
        outputs = self._run(batch, SamplingParams(max_tokens=1, temperature=0.0, logprobs=vocab))
        rows = torch.full((len(batch), vocab), float("-inf"))
        for row, out in enumerate(outputs):
            for token, logprob in out.outputs[0].logprobs[0].items():
                rows[row, token] = logprob.logprob
        return rows

    def generate(self, prompt_ids: Sequence[int], params: GenerationParams, stopper=None) -> Iterator[int]:
        from vllm import SamplingParams

        greedy = is_greedy(params)
        sampling = SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            top_k=-1 if greedy or not params.top_k else params.top_k,
            repetition_penalty=params.repetition_penalty,
            seed=params.seed if params.seed is not None else 0,
            stop=list(stop_strings(params)),
            stop_token_ids=sorted(stop_ids(self.tokenizer, params)),
        )
        outputs = self._run([prompt_ids], sampling)
        stopper = stopper or Stopper(self.tokenizer, params)
        for token in outputs[0].outputs[0].token_ids:  # the same stop rule as every other engine
            if stopper.is_end(token):
                return
            stopper.push(token)
            yield token
            if stopper.done:
                return
