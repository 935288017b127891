"""The three alignment tasks on TRL: reward model (`rm`), DPO (`dpo`), and RL from a reward model (`ppo`).

`ppo` runs TRL's RLOOTrainer: TRL 1.16 has no PPOTrainer any more (`from trl import PPOTrainer`
raises ImportError, and there is no `trl.experimental.ppo`). RLOO (REINFORCE leave-one-out,
Ahmadian et al. 2024) optimises the same objective as PPO-RLHF, reward-model score minus
beta x KL to the reference policy, without a value model.
"""

from __future__ import annotations

from pathlib import Path

from zhllama.core import console
from zhllama.core.alignment import data
from zhllama.core.alignment import runner as align
from zhllama.core.alignment.config import DpoConfig, PpoConfig, PreferenceConfig, RmConfig
from zhllama.core.errors import UserError
from zhllama.core.templates import get_template
from zhllama.core.training.data import expand_files


def split(dataset, fraction: float, seed: int):
    """sft's validation split (imported here: zhllama.core.training.tasks pulls in torch)."""
    from zhllama.core.training.tasks import _split

    return _split(dataset, fraction, seed)


def _template_settings(cfg: PreferenceConfig):
    return get_template(cfg.template), cfg.system_prompt, cfg.max_seq_length


def _preference_data(cfg: PreferenceConfig, tokenizer, reward: bool = False):
    from datasets import Dataset

    template, system, max_len = _template_settings(cfg)
    files = expand_files(cfg.data, (".json", ".jsonl"))
    pairs = data.read_pairs(files)
    columns, dropped = data.preference_examples(tokenizer, template, pairs, max_len, system)
    if dropped:
        console.warn(f"{dropped} of {len(pairs)} pairs are longer than --max-seq-length {max_len} and were skipped")
    console.log(f"{len(columns['prompt_ids'])} preference pairs ({template.name} template)")
    return Dataset.from_dict(data.reward_examples(columns) if reward else columns), dropped


def _check(cfg: PreferenceConfig, *inputs) -> tuple[PreferenceConfig, object]:
    """Option checks and the tokenizer (no output written yet)."""
    get_template(cfg.template)  # an unknown template is an option error, before any data is read
    cfg = align.check_inputs(cfg, *inputs)
    return cfg, align.load_tokenizer(cfg)


# ---- rm -----------------------------------------------------------------------------------------
def rm(cfg: RmConfig) -> dict:
    """Reward model: a sequence-classification head (one label) trained on chosen > rejected."""
    trl = align.trl()

    if cfg.adapter is not None:
        raise UserError(
            "--adapter: a reward model starts from a model folder; merge the SFT adapter first (zhllama merge)"
        )
    cfg, tokenizer = _check(cfg)
    pairs, dropped = _preference_data(cfg, tokenizer, reward=True)
    train_set, eval_set = split(pairs, cfg.validation_split, cfg.seed)
    args = align.trl_config(
        trl.RewardConfig,
        cfg,
        eval_set is not None,
        max_length=None,
        center_rewards_coefficient=cfg.center_rewards_coefficient,
    )
    align.check_output(cfg)
    model, resized = align.load_base(cfg, tokenizer, reward_head=True)
    model, peft_config = align.peft_setup(cfg, model, "SEQ_CLS", always_save=("score",))
    with align.stdout_to_stderr():
        trainer = trl.RewardTrainer(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer.hf,
            peft_config=peft_config,
        )
    align.fp32_trainables(trainer, cfg)

    def metrics():
        scored = eval_set if eval_set is not None else train_set
        result = trainer.evaluate(scored)  # TRL reports pairwise accuracy and margin under eval_*
        return {
            "accuracy": result["eval_accuracy"],
            "accuracy_on": "validation" if eval_set is not None else "train",
            "margin": result["eval_margin"],
            "eval_pairs": len(eval_set) if eval_set is not None else 0,
        }

    curves = {"accuracy.png": ("pairwise accuracy", [("accuracy", "train"), ("eval_accuracy", "validation")])}
    return align.train(trainer, cfg, "rm", tokenizer, len(train_set), metrics, curves, dropped, resized)


# ---- dpo ----------------------------------------------------------------------------------------
def dpo(cfg: DpoConfig) -> dict:
    """Direct preference optimisation; with LoRA the reference is the model with the adapter disabled."""
    trl = align.trl()

    cfg, tokenizer = _check(cfg)
    losses, beta = cfg.losses(), cfg.beta
    pairs, dropped = _preference_data(cfg, tokenizer)
    train_set, eval_set = split(pairs, cfg.validation_split, cfg.seed)
    args = align.trl_config(
        trl.DPOConfig,
        cfg,
        eval_set is not None,
        loss_type=losses,
        loss_weights=cfg.weights(),
        beta=beta,
        label_smoothing=cfg.label_smoothing,
        max_length=None,
    )
    align.check_output(cfg)
    model, resized = align.load_base(cfg, tokenizer)
    model, peft_config = align.peft_setup(cfg, model, "CAUSAL_LM")

    class TokenizedDPOTrainer(trl.DPOTrainer):
        """Takes zhllama's template-tokenized `prompt_ids`/`chosen_ids`/`rejected_ids` as they are."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    with align.stdout_to_stderr():
        trainer = TokenizedDPOTrainer(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer.hf,
            peft_config=peft_config,
        )
    align.fp32_trainables(trainer, cfg)

    def metrics():
        first_margin, last_margin = align.first_last(trainer, "rewards/margins")
        _, last_accuracy = align.first_last(trainer, "rewards/accuracies")
        result = {
            "loss_type": ",".join(losses),
            "beta": beta,
            "first_reward_margin": first_margin,
            "final_reward_margin": last_margin,
            "final_reward_accuracy": last_accuracy,
        }
        if eval_set is not None:
            evaluated = trainer.evaluate()
            result.update(
                eval_reward_margin=evaluated["eval_rewards/margins"],
                eval_reward_accuracy=evaluated["eval_rewards/accuracies"],
            )
        return result

    curves = {
        "rewards.png": (
            "implicit reward",
            [("rewards/chosen", "chosen"), ("rewards/rejected", "rejected"), ("rewards/margins", "margin")],
        ),
    }
    return align.train(trainer, cfg, "dpo", tokenizer, len(train_set), metrics, curves, dropped, resized)


# ---- ppo (RLOO) ---------------------------------------------------------------------------------
class RewardModelScorer:
    """A TRL reward function: scores prompt + completion ids (zhllama's tokenization) with a reward model."""

    __name__ = "reward_model"

    def __init__(self, model, pad_id: int, prompt_ids: dict[str, list[int]], batch_size: int = 8):
        self.model = model
        self.pad_id = pad_id
        self.prompt_ids = prompt_ids
        self.batch_size = batch_size

    def __call__(self, prompts, completions, completion_ids, **_) -> list[float]:
        import torch

        sequences = [self.prompt_ids[p] + list(c) for p, c in zip(prompts, completion_ids, strict=True)]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for i in range(0, len(sequences), self.batch_size):
            chunk = sequences[i : i + self.batch_size]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            scores += logits[:, 0].float().tolist()
        return scores


def load_reward_model(path: Path, tokenizer, dtype):
    """A reward model from `zhllama rm`: a sequence-classification folder, or a LoRA adapter folder on its base."""
    import json

    from transformers import AutoModelForSequenceClassification

    from zhllama.core.tokenizer import ZhTokenizer

    if not path.is_dir():
        raise UserError(f"--reward-model: {path}: no such folder")
    if any((path / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        rm_tok = ZhTokenizer(path)
        probe = "奖励模型 reward model 123"
        if len(rm_tok) != len(tokenizer) or rm_tok.encode(probe) != tokenizer.encode(probe):
            raise UserError(f"--reward-model: {path}: its tokenizer differs from the policy's ({len(rm_tok)} pieces)")
    adapter_cfg = path / "adapter_config.json"
    try:
        if adapter_cfg.is_file():
            from peft import PeftModel

            config = json.loads(adapter_cfg.read_text())
            if config.get("task_type") != "SEQ_CLS":
                raise UserError(f"--reward-model: {path}: adapter task_type is {config.get('task_type')}, not SEQ_CLS")
            base = Path(config.get("base_model_name_or_path") or "")
            if not (base / "config.json").is_file():
                raise UserError(f"--reward-model: {path}: its base model {base} is not a model folder")
            model = AutoModelForSequenceClassification.from_pretrained(
                str(base), num_labels=1, dtype=dtype, trust_remote_code=False
            )
            from safetensors import safe_open

            with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
                rows = [f.get_slice(k).get_shape()[0] for k in f.keys() if "embed_tokens" in k]
            if rows and rows[0] != model.get_input_embeddings().weight.shape[0]:
                model.resize_token_embeddings(rows[0], mean_resizing=False)
            model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        else:
            if not (path / "config.json").is_file():
                raise UserError(f"--reward-model: {path}: not a model or adapter folder")
            model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype, trust_remote_code=False)
    except OSError as exc:
        raise UserError(f"--reward-model: {path}: cannot load: {exc}") from exc
    if model.config.num_labels != 1:
        raise UserError(f"--reward-model: {path}: has {model.config.num_labels} labels, a reward model has 1")
    model.config.pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_id
    model.eval().requires_grad_(False)
    return model


def ppo(cfg: PpoConfig) -> dict:
    """RL from a reward model with KL control to the reference policy (TRL RLOO; see the module docstring)."""
    import torch
    from datasets import Dataset

    trl = align.trl()

    num_generations, max_new, beta = cfg.num_generations, cfg.max_completion_length, cfg.kl_coef
    cfg, tokenizer = _check(cfg, cfg.reward_model)
    template, system, max_len = _template_settings(cfg)
    files = expand_files(cfg.data, (".json", ".jsonl"))
    prompts: dict[str, list[int]] = {}
    too_long = 0
    for _source, _index, messages in data.read_prompts(files):
        ids = data.encode_prompt(tokenizer, template, messages, system)
        if len(ids) > max_len:
            too_long += 1
            continue
        prompts.setdefault(template.render_text(list(messages), system=system, add_generation_prompt=True), ids)
    if too_long:
        console.warn(f"{too_long} prompts are longer than --max-seq-length {max_len} and were skipped")
    if not prompts:
        raise UserError(f"no prompt fits in --max-seq-length {max_len}")
    dataset = Dataset.from_dict({"prompt": list(prompts)})
    train_set, eval_set = split(dataset, cfg.validation_split, cfg.seed)
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    reward_model = load_reward_model(Path(cfg.reward_model), tokenizer, dtype)
    args = align.trl_config(
        trl.RLOOConfig,
        cfg,
        eval_set is not None,
        per_device_train_batch_size=cfg.per_device_train_batch_size * num_generations,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size * num_generations,
        num_generations=num_generations,
        max_completion_length=max_new,
        temperature=cfg.temperature,
        beta=beta,
        top_k=0,
        top_p=1.0,
    )
    align.check_output(cfg)
    model, resized = align.load_base(cfg, tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_id
    model.generation_config.pad_token_id = tokenizer.pad_id
    model, peft_config = align.peft_setup(cfg, model, "CAUSAL_LM")
    scorer = RewardModelScorer(reward_model.to(model.device), tokenizer.pad_id, prompts)

    class TokenizedRLOOTrainer(trl.RLOOTrainer):
        """Prompts are tokenized by zhllama's template (sentencepiece semantics), not by the HF tokenizer."""

        def _tokenize_prompts(self, batch):
            return [prompts[p] for p in batch], None, {}

    with align.stdout_to_stderr():
        trainer = TokenizedRLOOTrainer(
            model=model,
            reward_funcs=scorer,
            args=args,
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer.hf,
            peft_config=peft_config,
        )
    align.fp32_trainables(trainer, cfg)

    def metrics():
        first_reward, last_reward = align.first_last(trainer, "reward")
        first_kl, last_kl = align.first_last(trainer, "kl")
        return {
            "algorithm": "rloo",
            "kl_coef": beta,
            "num_generations": num_generations,
            "first_reward": first_reward,
            "final_reward": last_reward,
            "first_kl": first_kl,
            "final_kl": last_kl,
            "reward_model": str(cfg.reward_model),
            **({"eval_reward": trainer.evaluate().get("eval_reward")} if eval_set is not None else {}),
        }

    curves = {
        "reward.png": ("reward-model score", [("reward", "train"), ("eval_reward", "validation")]),
        "kl.png": ("KL to reference (per token)", [("kl", "KL")]),
    }
    return align.train(trainer, cfg, "ppo", tokenizer, len(train_set), metrics, curves, too_long, resized)
