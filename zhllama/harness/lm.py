"""`ZhllamaLM`: an lm-eval `TemplateLM` over any model `zhllama.core.engine.open_model` loads.

HF folders, GGUF files (llama.cpp), LoRA stacks, Meta / TencentPretrain checkpoints and hub ids
from the local cache all work, on any engine (transformers, llamacpp, vllm), with zhllama's model
options (`dtype`, `load`, `rope_scaling`, `context_length`, ...) as `--model_args`.

How each request type is computed (the interface is `LoadedModel.session()`, so every engine
gives the same numbers as its own `next_token_logits`):
- `loglikelihood`: lm-eval's tokenization (`_encode_pair`: whole = encode(context + continuation),
  the continuation is what follows encode(context)); the context is fed once, then the
  continuation's tokens with `all_logits=True`; the sum of their log-softmax scores and whether
  each was the argmax. Requests are sorted so that equal contexts (the options of one question)
  follow each other and reuse the context's cache (`session.rollback`).
- `loglikelihood_rolling`: lm-eval's disjoint rolling windows of the model's context, the first
  conditioned on BOS (or EOS when there is none).
- `generate_until`: `LoadedModel.generate` with greedy decoding unless `do_sample`, no repetition
  penalty (lm-eval's defaults), cut at the first `until` string (zhllama's `Stopper`).
Text is encoded as zhllama's own evaluations encode it: BOS first (when the tokenizer has one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from zhllama.core.errors import UserError

LIST_SEPARATOR = ";"  # lora=A;B inside --model_args (commas separate the arguments)


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def model_options(model: str | None, **kwargs):
    """`ModelOptions` from lm-eval's string arguments; unknown keys are refused by name."""
    import dataclasses

    from zhllama.core.loading.options import ModelOptions

    if not model:
        raise UserError("--model_args: model=PATH is required (a HF folder, .gguf file, hub id or Meta folder)")
    fields = {f.name: f for f in dataclasses.fields(ModelOptions)}
    values: dict = {"model": str(model)}
    for key, value in kwargs.items():
        if key not in fields:
            raise UserError(f"--model_args: unknown argument '{key}' (zhllama accepts: {', '.join(sorted(fields))})")
        if value is None:
            continue
        if key == "lora":
            parts = value if isinstance(value, list | tuple) else str(value).split(LIST_SEPARATOR)
            values[key] = [Path(p) for p in parts if str(p).strip()]
        elif key in ("context_length", "threads", "tensor_parallel"):
            try:
                values[key] = int(value)
            except ValueError as exc:
                raise UserError(f"--model_args: {key}={value} is not an integer") from exc
        else:
            values[key] = str(value)
    return ModelOptions(**values)


def _device(device: str | None) -> str:
    """lm-eval's `--device` (its default is cuda:0 even without a GPU): kept when it can apply,
    else zhllama's `auto`, with a warning, as lm-eval's own HF model falls back to the CPU."""
    if not device:
        return "auto"
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            from zhllama.core import console

            console.warn(f"--device {device}: no CUDA GPU visible; using --device auto")
            return "auto"
    return str(device)


@register_model("zhllama")
class ZhllamaLM(TemplateLM):
    """lm-eval model `zhllama`; `--model_args model=PATH[,lora=A;B][,engine=...][,dtype=...]`."""

    def __init__(
        self,
        model: str | None = None,
        pretrained: str | None = None,
        batch_size: int | str | None = None,
        max_batch_size: int | None = None,
        device: str | None = None,
        max_gen_toks: int = 256,
        loaded=None,
        **kwargs,
    ):
        super().__init__()
        from zhllama.core.engine import open_model

        if loaded is None:
            options = model_options(model or pretrained, device=_device(device), **kwargs)
            loaded = open_model(options)
        self.model = loaded
        self.max_gen_toks = int(max_gen_toks)
        self.batch_size = batch_size

    # -- tokenization -----------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        eos = self.model.tokenizer.eos_id
        return eos if eos is not None else self.prefix_token_id

    @property
    def prefix_token_id(self) -> int:
        tok = self.model.tokenizer
        first = tok.bos_id if tok.bos_id is not None else tok.eos_id
        if first is None:
            raise UserError("the model's tokenizer has neither BOS nor EOS: nothing to condition the first token on")
        return first

    @property
    def max_length(self) -> int:
        return self.model.context_length

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.model, "path", "")) or type(self.model).__name__

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        bos = add_special_tokens is not False
        return list(self.model.tokenizer.encode(string, bos=bos))

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.model.tokenizer.decode(list(ids))

    # -- scoring ----------------------------------------------------------------------------
    def _score(self, session, context: list[int], continuation: list[int], reuse: bool) -> tuple[float, bool]:
        """Sum of log P(continuation | context) and whether every token was the argmax."""
        import torch

        if reuse:  # the same context as the previous request: keep its cache but the last token
            session.rollback(len(context) - 1)
            first = session.feed(context[-1:])
        else:
            first = session.feed(context)
        rows = [first.reshape(1, -1)]
        if len(continuation) > 1:
            rows.append(session.feed(continuation[:-1], all_logits=True).reshape(len(continuation) - 1, -1))
        logp = torch.log_softmax(torch.cat(rows).float(), dim=-1)
        target = torch.tensor(continuation, dtype=torch.long)
        picked = logp.gather(1, target[:, None])[:, 0]
        return float(picked.sum()), bool((logp.argmax(-1) == target).all())

    def _fit(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """Left-truncate the context so that what is fed (context + continuation[:-1]) fits the model's
        context, as lm-eval's HF model does (`(context + continuation)[-(max_length + 1):][:-1]`)."""
        limit = self.max_length
        if len(continuation) > limit:
            raise UserError(f"a continuation of {len(continuation)} tokens does not fit the context ({limit})")
        if len(context) + len(continuation) - 1 > limit:
            context = context[len(context) + len(continuation) - 1 - limit :]
        return context, continuation

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        from tqdm import tqdm

        fitted = [self._fit(list(ctx), list(cont)) for _, ctx, cont in requests]
        order = sorted(range(len(fitted)), key=lambda i: (fitted[i][0], len(fitted[i][1])))
        results: list[tuple[float, bool] | None] = [None] * len(fitted)
        session, current = None, None
        for i in tqdm(order, disable=disable_tqdm, desc="zhllama loglikelihood"):
            context, continuation = fitted[i]
            if not continuation:
                results[i] = (0.0, True)
                continue
            reuse = session is not None and context == current
            if not reuse:
                session = self.model.session()
            results[i] = self._score(session, context, continuation, reuse=reuse)
            current = context
            key = requests[i][0]
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, results[i])
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        for (text,) in [r.args for r in requests]:
            tokens = self.tok_encode(text, add_special_tokens=False)
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1
                )
            ]
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows], disable_tqdm=True)
            total = sum(score for score, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    # -- generation -------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm import tqdm

        from zhllama.core.engine import GenerationParams
        from zhllama.core.generation.stopping import Stopper

        out = []
        for context, gen_kwargs in tqdm([r.args for r in requests], disable=disable_tqdm, desc="zhllama generate"):
            kwargs = dict(gen_kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            eot = self.tok_decode([self.eot_token_id])
            if eot and eot not in until:
                until.append(eot)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            sample = _flag(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 1.0 if sample else 0.0))
            params = GenerationParams(
                max_new_tokens=max_new,
                temperature=temperature,
                top_p=float(kwargs.pop("top_p", 1.0)),
                top_k=int(kwargs.pop("top_k", 0) or 0),
                repetition_penalty=float(kwargs.pop("repetition_penalty", 1.0)),
                seed=int(kwargs.pop("seed", 0)),
                greedy=not sample or temperature <= 0,
                stop_strings=tuple(s for s in until if s),
            )
            ids = self.tok_encode(context)
            room = self.max_length - max_new
            if room < 1:
                raise UserError(
                    f"max_gen_toks {max_new}: leaves no room for the prompt in the context ({self.max_length})"
                )
            ids = ids[-room:]
            stopper = Stopper(self.model.tokenizer, params, getattr(self.model, "extra_stops", ()))
            for _ in self.model.generate(ids, params, stopper=stopper):
                pass
            stopper.stream.finish()
            text = stopper.stream.text
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt=True) -> str:
        """The model's own chat template (its tokenizer's jinja template), as lm-eval's HF model."""
        hf = getattr(self.model.tokenizer, "hf", None)
        if hf is None or not getattr(hf, "chat_template", None):
            raise UserError("--apply_chat_template: this model's tokenizer has no chat template")
        return hf.apply_chat_template(chat_history, tokenize=False, add_generation_prompt=add_generation_prompt)
