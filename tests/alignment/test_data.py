"""Preference data: exact ids and masks against sentencepiece, record shapes, one-line errors."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm

from zhllama.core.alignment import data
from zhllama.core.errors import UserError
from zhllama.core.templates import get_template
from zhllama.core.tokenizer import ZhTokenizer

from .conftest import write_jsonl

SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"


def inst(user: str, first: bool) -> str:
    """The Chinese-LLaMA-2 prompt format, written out here independently of the template code."""
    if first:
        return f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{user} [/INST]"
    return f"[INST] {user} [/INST]"


def test_pairs_tokenize_exactly_as_sentencepiece(tmp_path, base_tokenizer):
    sp = spm.SentencePieceProcessor(model_file=str(base_tokenizer / "tokenizer.model"))
    bos, eos = sp.bos_id(), sp.eos_id()
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "What is the capital of France?", "chosen": "Paris is.", "rejected": "I do not know."},
            {
                "conversations": [
                    {"from": "human", "value": "Hi there"},
                    {"from": "gpt", "value": "Hello!"},
                    {"from": "human", "value": "How are you?"},
                ],
                "chosen": {"from": "gpt", "value": "Fine, thanks."},
                "rejected": {"from": "gpt", "value": "Go away."},
            },
            {
                "prompt": [{"role": "user", "content": "Name a colour"}],
                "chosen": [{"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "assistant", "content": "Seven."}],
            },
        ],
    )
    tok = ZhTokenizer(base_tokenizer)
    columns, dropped = data.preference_examples(
        tok, get_template("llama2-zh"), data.read_pairs([path]), max_length=512, system=None
    )
    assert dropped == 0
    expected_prompts = [
        [bos, *sp.encode(inst("What is the capital of France?", True))],
        [
            bos,
            *sp.encode(inst("Hi there", True)),
            *sp.encode("Hello!"),
            eos,
            bos,
            *sp.encode(inst("How are you?", False)),
        ],
        [bos, *sp.encode(inst("Name a colour", True))],
    ]
    answers = [("Paris is.", "I do not know."), ("Fine, thanks.", "Go away."), ("Blue.", "Seven.")]
    assert columns["prompt_ids"] == expected_prompts
    assert columns["chosen_ids"] == [[*sp.encode(c), eos] for c, _ in answers]
    assert columns["rejected_ids"] == [[*sp.encode(r), eos] for _, r in answers]

    # TRL's DPO collator: the prompt is masked out of the loss, both answers (EOS included) are in it
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=tok.pad_id)([{k: columns[k][i] for k in columns} for i in range(3)])
    for row in range(6):
        i, key = row % 3, ("chosen_ids" if row < 3 else "rejected_ids")
        prompt, answer = columns["prompt_ids"][i], columns[key][i]
        n = len(prompt) + len(answer)
        assert batch["input_ids"][row, :n].tolist() == prompt + answer
        assert batch["completion_mask"][row].tolist() == [0] * len(prompt) + [1] * len(answer) + [0] * (
            batch["input_ids"].shape[1] - n
        )
        assert batch["attention_mask"][row].sum().item() == n
        assert answer[-1] == eos

    # the reward model sees whole sequences
    reward = data.reward_examples(columns)
    assert reward["chosen_ids"][1] == expected_prompts[1] + [*sp.encode("Fine, thanks."), eos]
    assert reward["rejected_ids"][2] == expected_prompts[2] + [*sp.encode("Seven."), eos]


def test_system_field_alpaca_shape_and_length_limit(tmp_path, base_tokenizer):
    sp = spm.SentencePieceProcessor(model_file=str(base_tokenizer / "tokenizer.model"))
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            [
                {"instruction": "Sum", "input": "1 and 2", "chosen": "3", "rejected": "4", "system": "Be exact."},
                {"prompt": "x " * 200, "chosen": "a", "rejected": "b"},
            ]
        )
    )
    tok = ZhTokenizer(base_tokenizer)
    columns, dropped = data.preference_examples(
        tok, get_template("llama2-zh"), data.read_pairs([path]), max_length=64, system=None
    )
    assert dropped == 1
    assert columns["prompt_ids"] == [
        [sp.bos_id(), *sp.encode("[INST] <<SYS>>\nBe exact.\n<</SYS>>\n\nSum\n1 and 2 [/INST]")]
    ]
    with pytest.raises(UserError, match="no preference pair fits in --max-seq-length 8"):
        data.preference_examples(tok, get_template("llama2-zh"), data.read_pairs([path]), max_length=8, system=None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a", "chosen": "x"}\n', "p.jsonl: record 0: missing 'rejected'"),
        (
            '{"prompt": "a", "chosen": "x", "rejected": "y"}\n{"prompt": "b", "chosen": "same", "rejected": "same"}\n',
            "p.jsonl: record 1: 'chosen' and 'rejected' are identical",
        ),
        ("", "p.jsonl: no records (empty data)"),
        ("\n\n", "p.jsonl: no records (empty data)"),
        ('["not", "objects"]\n', "p.jsonl: record 0: not a JSON object"),
        (
            '{"prompt": "a", "chosen": "x", "rejected": "y"}\n{"prompt": "a", "chosen": ',
            "p.jsonl: record 1: not valid JSON (column 27: Expecting value)",
        ),
        ('{"chosen": "x", "rejected": "y"}\n', "p.jsonl: record 0: missing 'prompt'"),
        ('{"prompt": "a", "chosen": "", "rejected": "y"}\n', "p.jsonl: record 0: 'chosen' is empty"),
        (
            '{"prompt": "a", "chosen": ["x", "z"], "rejected": "y"}\n',
            "p.jsonl: record 0: 'chosen' must hold exactly one",
        ),
        (
            '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "chosen": "x", '
            '"rejected": "y"}\n',
            "p.jsonl: record 0: the prompt must end with a user turn",
        ),
        (
            '{"conversations": [{"from": "robot", "value": "q"}], "chosen": "x", "rejected": "y"}\n',
            "p.jsonl: record 0: turn 0 needs a role",
        ),
    ],
)
def test_bad_records_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        data.read_pairs([path])
    text = str(info.value)
    assert "\n" not in text
    assert message in text, text


def test_cli_bad_data_exits_2_before_writing(tmp_path, run_cli, tiny_base_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "x", "rejected": "x"}\n')
    for command in ("rm", "dpo"):
        out = tmp_path / f"out_{command}"
        code, stdout, stderr = run_cli(command, "--model", tiny_base_model, "--data", bad, "--output", out)
        assert code == 2
        assert stderr.strip().splitlines() == [
            f"zhllama: error: {bad}: record 0: 'chosen' and 'rejected' are identical (nothing to prefer)"
        ]
        assert stdout == "" and not out.exists()
    code, _, stderr = run_cli(
        "ppo",
        "--model",
        tiny_base_model,
        "--data",
        bad,
        "--output",
        tmp_path / "o",
        "--reward-model",
        tmp_path / "nope",
    )
    assert code == 2 and stderr.startswith("zhllama: error: --reward-model:"), stderr


def test_cli_option_errors(tmp_path, run_cli, tiny_base_model, separable_pairs):
    cases = [
        (("dpo", "--loss", "sigmod"), "zhllama: error: --loss: sigmod is not a TRL DPO loss"),
        (("dpo", "--loss", "sigmoid,sft", "--loss-weights", "1"), "zhllama: error: --loss-weights: 1 must be one"),
        (("dpo", "--beta", "0"), "zhllama: error: --beta: 0.0 must be > 0"),
        (("dpo", "--loss", "exo_pair"), "zhllama: error: --label-smoothing: 0.0 must be > 0 for exo_pair"),
        (("rm", "--template", "nope"), "zhllama: error: unknown template 'nope'"),
        (("rm", "--adapter", tmp_path), "zhllama: error: --adapter: a reward model starts from a model folder"),
        (("ppo", "--reward-model", tmp_path, "--num-generations", "1"), "zhllama: error: --num-generations: 1"),
        # groups the alignment tasks leave out are not offered at all (not refused after parsing)
        (("dpo", "--streaming", "--max-steps", "2"), "zhllama: error: No such option: --streaming"),
        (("rm", "--rope-scaling", "linear", "--rope-factor", "2"), "zhllama: error: No such option: --rope-scaling"),
    ]
    for args, message in cases:
        out = tmp_path / "never"
        code, _, stderr = run_cli(*args, "--model", tiny_base_model, "--data", separable_pairs, "--output", out)
        assert code == 2, (args, stderr)
        assert stderr.startswith(message), (args, stderr)
        assert not out.exists()


def test_dpo_losses_are_trls():
    import inspect
    import re

    from trl import DPOTrainer

    from zhllama.core.alignment.config import DPO_LOSSES

    source = inspect.getsource(DPOTrainer)
    assert set(DPO_LOSSES) == set(re.findall(r'loss_type == "(\w+)"', source))


def test_missing_trl_is_an_install_hint(tmp_path, run_cli, monkeypatch, tiny_base_model, separable_pairs):
    import sys

    monkeypatch.setitem(sys.modules, "trl", None)  # as if the align extra were not installed
    out = tmp_path / "out"
    code, _, stderr = run_cli("dpo", "--model", tiny_base_model, "--data", separable_pairs, "--output", out)
    assert code == 2 and not out.exists()
    assert stderr.startswith("zhllama: error: rm / dpo / ppo need TRL") and "pip install 'zhllama[align]'" in stderr


def test_command_modules_import_no_heavy_library():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import typer, zhllama.cli.training, zhllama.core.alignment\n"
        "app = typer.Typer()\n"
        "zhllama.cli.training.register_training(app)\n"
        "typer.main.get_command(app)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'deepspeed') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
