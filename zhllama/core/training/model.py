"""The model steps of the pipeline: load (causal LM or reward head; QLoRA; rope overrides), resize, wrap.

One path for every task: the config is read with `AutoConfig` (the rope overrides of the long-context
group applied to it), QLoRA goes through the one bitsandbytes builder
(`zhllama.core.loading.quantization.quantization_for`), and LoRA is one `LoraConfig` builder. The
pipeline wraps the model itself (`get_peft_model`) for zhllama's Trainer; TRL's trainers take the
`LoraConfig` and wrap it themselves (`by_trainer=True`).
"""

from __future__ import annotations

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.training.options import LongContextOptions

# head -> (transformers auto class, PEFT task type)
HEADS = {
    "causal": ("AutoModelForCausalLM", "CAUSAL_LM"),
    "reward": ("AutoModelForSequenceClassification", "SEQ_CLS"),  # one score (num_labels=1)
}


def rope_overrides(cfg, config) -> dict:
    """Config changes for --rope-scaling/--rope-factor/--model-max-length ({} when none given, or when
    the task has no long-context group).

    Written into a --full model's config.json by save_pretrained, and as `zhllama_overrides.json`
    next to a LoRA adapter (`{"config": {...}}`), which `zhllama merge` applies to the merged config.
    """
    out: dict = {}
    if not isinstance(cfg, LongContextOptions):
        return out
    original = int(config.max_position_embeddings)
    if cfg.rope_scaling is not None:
        current = getattr(config, "rope_parameters", None) or {}
        if current.get("rope_type", "default") != "default":
            raise UserError(
                f"{cfg.model}: the model already has rope scaling {current.get('rope_type')} "
                f"(factor {current.get('factor')}); --rope-scaling would apply a second one"
            )
        scaling = {"rope_type": cfg.rope_scaling, "type": cfg.rope_scaling, "factor": float(cfg.rope_factor)}
        if cfg.rope_scaling == "yarn":
            scaling["original_max_position_embeddings"] = original
        out["rope_scaling"] = scaling
        out["max_position_embeddings"] = cfg.model_max_length or int(original * cfg.rope_factor)
    elif cfg.model_max_length is not None:
        out["max_position_embeddings"] = cfg.model_max_length
    return out


def apply_overrides(config, overrides: dict) -> None:
    if "rope_scaling" in overrides:
        scaling = {k: v for k, v in overrides["rope_scaling"].items() if k != "type"}
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
        config.rope_parameters = {**({"rope_theta": theta} if theta is not None else {}), **scaling}
    if "max_position_embeddings" in overrides:
        config.max_position_embeddings = overrides["max_position_embeddings"]


def quantization(cfg, config, on_gpu: bool, head: str):
    """The bitsandbytes config of `--qlora 4|8` (CPU-safe 4-bit); None without --qlora.

    A reward model's score head stays in full precision: it is trained fully (modules_to_save)."""
    if cfg.qlora is None:
        return None
    from zhllama.core.loading.quantization import quantization_for

    settings = {"double_quant": True} if cfg.qlora == 4 else {}
    quant = quantization_for(f"{cfg.qlora}bit", config, on_gpu, "float32", **settings)
    if head == "reward":
        quant.llm_int8_skip_modules = [*(quant.llm_int8_skip_modules or ["lm_head"]), "score"]
    return quant


def load_model(cfg, head: str = "causal", pad_id: int | None = None):
    """The base model for `head`, with the rope overrides applied to its config; (model, overrides)."""
    import torch
    import transformers
    from transformers import AutoConfig

    if not (cfg.model / "config.json").is_file():
        raise UserError(f"{cfg.model}: not a model folder (no config.json)")
    head_settings = {"num_labels": 1, "pad_token_id": pad_id} if head == "reward" else {}
    try:
        config = AutoConfig.from_pretrained(str(cfg.model), trust_remote_code=False, **head_settings)
    except (OSError, ValueError) as exc:
        raise UserError(f"{cfg.model / 'config.json'}: cannot read model config: {exc}") from exc
    overrides = rope_overrides(cfg, config)
    apply_overrides(config, overrides)
    kwargs = {"config": config, "dtype": torch.bfloat16 if cfg.bf16 else torch.float32, "attn_implementation": cfg.attn}
    on_gpu = torch.cuda.is_available()
    quant = quantization(cfg, config, on_gpu, head)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = None if on_gpu else {"": "cpu"}
    auto_class = getattr(transformers, HEADS[head][0])
    try:
        model = auto_class.from_pretrained(str(cfg.model), trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"{cfg.model}: cannot load model: {exc}") from exc
    return model, overrides


def resize(model, cfg, tokenizer) -> bool:
    """Grow the embeddings for a larger tokenizer (new rows from the base tokenizer's pieces)."""
    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.embeddings import resize_for_tokenizer

    base_tokenizer = None
    if any((cfg.model / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        base_tokenizer = ZhTokenizer(cfg.model)
    resized = resize_for_tokenizer(model, tokenizer, base_tokenizer)
    if resized and not cfg.full and "embed_tokens" not in cfg.saved_modules():
        console.warn("the vocabulary grew but embed_tokens is not in --modules-to-save: new rows stay untrained")
    return resized


def lora_config(cfg, model, task_type: str, always_save: tuple[str, ...] = ()):
    """A fresh LoRA config; `--modules-to-save` entries the model lacks (lm_head of a reward model) are skipped."""
    from peft import LoraConfig

    keys = [n for n, _ in model.named_modules()]
    names = {n.rsplit(".", 1)[-1] for n in keys}
    targets = cfg.targets()
    missing = [t for t in targets if t not in names]
    if missing:
        raise UserError(f"--lora-targets: module(s) {', '.join(missing)} not found in the model")
    to_save = [m for m in cfg.saved_modules() if any(k.endswith(m) for k in keys)]  # PEFT's matching rule
    to_save += [m for m in always_save if m not in to_save]
    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=to_save or None,
        task_type=task_type,
    )


def continue_adapter(cfg, model):
    """`--adapter`: the existing adapter on `model`, trainable; one trained for another base is a user error."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(cfg.adapter), is_trainable=True)
    except RuntimeError as exc:  # an adapter trained for another base: the user's mistake
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), None)
        if detail is None:
            raise
        raise UserError(f"{cfg.adapter}: adapter does not fit {cfg.model}: {detail}") from exc


def wrap_model(cfg, model, head: str = "causal", always_save: tuple[str, ...] = (), by_trainer: bool = False):
    """(model, peft_config): full training, a continued adapter, or a new LoRA.

    With `by_trainer` (TRL) a new LoRA is returned as its config for the trainer to apply; otherwise
    it is applied here, and gradient checkpointing is switched on as PEFT needs it."""
    if cfg.full:
        if not by_trainer and cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model, None
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.qlora is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.adapter is not None:
        wrapped, peft_config = continue_adapter(cfg, model), None
    else:
        peft_config = lora_config(cfg, model, HEADS[head][1], always_save)
        if by_trainer:
            return model, peft_config
        wrapped, peft_config = get_peft_model(model, peft_config), None
    if not by_trainer and cfg.gradient_checkpointing and cfg.qlora is None:
        wrapped.base_model.model.gradient_checkpointing_enable()
        wrapped.enable_input_require_grads()
    return wrapped, peft_config
