"""The three alignment tasks on TRL: reward model (`rm`), DPO (`dpo`), and RL from a reward model (`ppo`).

Each is a `TrlTask` spec run by the training pipeline (`zhllama.core.training.runner`): it reads and
tokenizes its data before the model loads (`prepare`), and supplies its TRL config values, trainer,
metrics and curves.

`ppo` runs TRL's RLOOTrainer: TRL 1.16 has no PPOTrainer any more (`from trl import PPOTrainer`
raises ImportError, and there is no `trl.experimental.ppo`). RLOO (REINFORCE leave-one-out,
Ahmadian et al. 2024) optimises the same objective as PPO-RLHF, reward-model score minus
beta x KL to the reference policy, without a value model.
"""

from __future__ import annotations

from pathlib import Path

from zhllama.core import console
from zhllama.core.alignment import data
from zhllama.core.alignment.base import TrlTask, split
from zhllama.core.alignment.config import DpoConfig, PpoConfig, RmConfig
from zhllama.core.errors import UserError
from zhllama.core.training.data import expand_files
from zhllama.core.training.runner import Run, train

PREFERENCE_SUFFIXES = (".json", ".jsonl")


class PreferenceTask(TrlTask):
    """rm and dpo: prompt / chosen / rejected pairs, tokenized with the template."""

    reward_columns = False  # rm trains on (chosen, rejected) full sequences

    def prepare(self, run: Run) -> None:
        from datasets import Dataset

        cfg = run.cfg
        files = expand_files(cfg.data, PREFERENCE_SUFFIXES)
        pairs = data.read_pairs(files)
        columns, dropped = data.preference_examples(
            run.tokenizer, self.template, pairs, cfg.max_seq_length, cfg.system_prompt
        )
        if dropped:
            console.warn(
                f"{dropped} of {len(pairs)} pairs are longer than --max-seq-length {cfg.max_seq_length} and were skipped"
            )
        console.log(f"{len(columns['prompt_ids'])} preference pairs ({self.template.name} template)")
        dataset = Dataset.from_dict(data.reward_examples(columns) if self.reward_columns else columns)
        run.train_set, run.eval_set = split(dataset, cfg.validation_split, cfg.seed)
        run.skipped = dropped


# ---- rm -----------------------------------------------------------------------------------------
class Rm(PreferenceTask):
    """Reward model: a sequence-classification head (one label) trained on chosen > rejected."""

    kind, config, head, trl_config = "rm", RmConfig, "reward", "RewardConfig"
    always_save = ("score",)
    reward_columns = True
    curves = {"accuracy.png": ("pairwise accuracy", [("accuracy", "train"), ("eval_accuracy", "validation")])}

    def check(self, cfg):
        if cfg.adapter is not None:
            raise UserError(
                "--adapter: a reward model starts from a model folder; merge the SFT adapter first (zhllama merge)"
            )
        super().check(cfg)

    def trl_settings(self, run: Run) -> dict:
        return {"max_length": None, "center_rewards_coefficient": run.cfg.center_rewards_coefficient}

    def trainer(self, run: Run):
        return self.trl_trainer(run, self.trl.RewardTrainer)

    def task_metrics(self, run: Run) -> dict:
        scored = run.eval_set if run.eval_set is not None else run.train_set
        result = run.trainer.evaluate(scored)  # TRL reports pairwise accuracy and margin under eval_*
        return {
            "accuracy": result["eval_accuracy"],
            "accuracy_on": "validation" if run.eval_set is not None else "train",
            "margin": result["eval_margin"],
            "eval_pairs": len(run.eval_set) if run.eval_set is not None else 0,
        }


# ---- dpo ----------------------------------------------------------------------------------------
class Dpo(PreferenceTask):
    """Direct preference optimisation; with LoRA the reference is the model with the adapter disabled."""

    kind, config, trl_config = "dpo", DpoConfig, "DPOConfig"
    curves = {
        "rewards.png": (
            "implicit reward",
            [("rewards/chosen", "chosen"), ("rewards/rejected", "rejected"), ("rewards/margins", "margin")],
        ),
    }

    def trl_settings(self, run: Run) -> dict:
        cfg = run.cfg
        return {
            "loss_type": cfg.losses(),
            "loss_weights": cfg.weights(),
            "beta": cfg.beta,
            "label_smoothing": cfg.label_smoothing,
            "max_length": None,
        }

    def trainer(self, run: Run):
        class TokenizedDPOTrainer(self.trl.DPOTrainer):
            """Takes zhllama's template-tokenized `prompt_ids`/`chosen_ids`/`rejected_ids` as they are."""

            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                return dataset

        return self.trl_trainer(run, TokenizedDPOTrainer)

    def task_metrics(self, run: Run) -> dict:
        first_margin, last_margin = self.first_last(run, "rewards/margins")
        _, last_accuracy = self.first_last(run, "rewards/accuracies")
        result = {
            "loss_type": ",".join(run.cfg.losses()),
            "beta": run.cfg.beta,
            "first_reward_margin": first_margin,
            "final_reward_margin": last_margin,
            "final_reward_accuracy": last_accuracy,
        }
        if run.eval_set is not None:
            evaluated = run.trainer.evaluate()
            result.update(
                eval_reward_margin=evaluated["eval_rewards/margins"],
                eval_reward_accuracy=evaluated["eval_rewards/accuracies"],
            )
        return result


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
    from transformers import AutoModelForSequenceClassification

    from zhllama.core.paths import read_json
    from zhllama.core.tokenizer import ZhTokenizer

    if not path.is_dir():
        raise UserError(f"--reward-model: {path}: no such folder")
    if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():  # reliab: checked before loading
        from zhllama.core.checkpoint.validate import validate_adapter_dir, validate_model_dir

        (validate_adapter_dir if (path / "adapter_config.json").is_file() else validate_model_dir)(path)
    if any((path / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        rm_tok = ZhTokenizer(path)
        probe = "奖励模型 reward model 123"
        if len(rm_tok) != len(tokenizer) or rm_tok.encode(probe) != tokenizer.encode(probe):
            raise UserError(f"--reward-model: {path}: its tokenizer differs from the policy's ({len(rm_tok)} pieces)")
    adapter_cfg = path / "adapter_config.json"
    try:
        if adapter_cfg.is_file():
            from peft import PeftModel

            config = read_json(adapter_cfg)
            if config.get("task_type") != "SEQ_CLS":
                raise UserError(f"--reward-model: {path}: adapter task_type is {config.get('task_type')}, not SEQ_CLS")
            base = Path(config.get("base_model_name_or_path") or "")
            if not (base / "config.json").is_file():
                raise UserError(f"--reward-model: {path}: its base model {base} is not a model folder")
            validate_model_dir(base)
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


class Ppo(TrlTask):
    """RL from a reward model with KL control to the reference policy (TRL RLOO; see the module docstring)."""

    kind, config, trl_config = "ppo", PpoConfig, "RLOOConfig"
    curves = {
        "reward.png": ("reward-model score", [("reward", "train"), ("eval_reward", "validation")]),
        "kl.png": ("KL to reference (per token)", [("kl", "KL")]),
    }

    def inputs(self, cfg):
        return [cfg.reward_model]

    def prepare(self, run: Run) -> None:
        """Prompts (tokenized with the template; too long ones skipped) and the reward model."""
        import torch
        from datasets import Dataset

        cfg, tokenizer = run.cfg, run.tokenizer
        system, max_len = cfg.system_prompt, cfg.max_seq_length
        prompts: dict[str, list[int]] = {}
        too_long = 0
        for _source, _index, messages in data.read_prompts(expand_files(cfg.data, PREFERENCE_SUFFIXES)):
            ids = data.encode_prompt(tokenizer, self.template, messages, system)
            if len(ids) > max_len:
                too_long += 1
                continue
            text = self.template.render_text(list(messages), system=system, add_generation_prompt=True)
            prompts.setdefault(text, ids)
        if too_long:
            console.warn(f"{too_long} prompts are longer than --max-seq-length {max_len} and were skipped")
        if not prompts:
            raise UserError(f"no prompt fits in --max-seq-length {max_len}")
        run.train_set, run.eval_set = split(
            Dataset.from_dict({"prompt": list(prompts)}), cfg.validation_split, cfg.seed
        )
        run.skipped = too_long
        dtype = torch.bfloat16 if cfg.bf16 else torch.float32
        run.state["prompts"] = prompts
        run.state["reward_model"] = load_reward_model(Path(cfg.reward_model), tokenizer, dtype)

    def trl_settings(self, run: Run) -> dict:
        cfg = run.cfg
        return {
            "per_device_train_batch_size": cfg.per_device_train_batch_size * cfg.num_generations,
            "per_device_eval_batch_size": cfg.per_device_eval_batch_size * cfg.num_generations,
            "num_generations": cfg.num_generations,
            "max_completion_length": cfg.max_completion_length,
            "temperature": cfg.temperature,
            "beta": cfg.kl_coef,
            "top_k": 0,
            "top_p": 1.0,
        }

    def trainer(self, run: Run):
        model, tokenizer, prompts = run.model, run.tokenizer, run.state["prompts"]
        model.generation_config.eos_token_id = tokenizer.eos_id
        model.generation_config.pad_token_id = tokenizer.pad_id
        scorer = RewardModelScorer(run.state["reward_model"].to(model.device), tokenizer.pad_id, prompts)

        class TokenizedRLOOTrainer(self.trl.RLOOTrainer):
            """Prompts are tokenized by zhllama's template (sentencepiece semantics), not by the HF tokenizer."""

            def _tokenize_prompts(self, batch):
                return [prompts[p] for p in batch], None, {}

        return self.trl_trainer(run, TokenizedRLOOTrainer, reward_funcs=scorer)

    def task_metrics(self, run: Run) -> dict:
        cfg = run.cfg
        first_reward, last_reward = self.first_last(run, "reward")
        first_kl, last_kl = self.first_last(run, "kl")
        return {
            "algorithm": "rloo",
            "kl_coef": cfg.kl_coef,
            "num_generations": cfg.num_generations,
            "first_reward": first_reward,
            "final_reward": last_reward,
            "first_kl": first_kl,
            "final_kl": last_kl,
            "reward_model": str(cfg.reward_model),
            **({"eval_reward": run.trainer.evaluate().get("eval_reward")} if run.eval_set is not None else {}),
        }


def rm(cfg: RmConfig) -> dict:
    """Reward model: a sequence-classification head (one label) trained on chosen > rejected."""
    return train(Rm(), cfg)


def dpo(cfg: DpoConfig) -> dict:
    """Direct preference optimisation; with LoRA the reference is the model with the adapter disabled."""
    return train(Dpo(), cfg)


def ppo(cfg: PpoConfig) -> dict:
    """RL from a reward model with KL control to the reference policy (TRL RLOO)."""
    return train(Ppo(), cfg)
