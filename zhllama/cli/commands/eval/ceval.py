"""`zhllama eval ceval` (also `zhllama ceval`)."""

from __future__ import annotations

from zhllama.cli.commands.eval.exam import make_exam_command

command = make_exam_command(
    "ceval",
    (
        "zhllama eval ceval --model merged --data-dir ceval-exam --output results/ceval --shots 5",
        "zhllama eval ceval --model merged --data-dir ceval-exam --output results/cla2 --prompt-style cla2 --template llama2-zh",
        "zhllama ceval --model merged --data-dir ceval-exam --split test --output results/ceval-test",
    ),
)
