"""`zhllama eval cmmlu` (also `zhllama cmmlu`)."""

from __future__ import annotations

from zhllama.cli.commands.eval.exam import make_exam_command

command = make_exam_command(
    "cmmlu",
    (
        "zhllama eval cmmlu --model merged --data-dir cmmlu --output results/cmmlu --prompt-style official",
        "zhllama eval cmmlu --model merged --data-dir cmmlu --output results/cmmlu-cla2 --prompt-style cla2 --shots 5",
    ),
)
