"""What C-Eval and CMMLU share: a folder of per-subject CSVs plus a subject -> (name, category) mapping.

An exam plugin declares its command instead of building it: `settings_class` (its flags), `check`
(the options, once, before anything is read), `prepare` (every data file, before the model
loads), `run` and `table`. `zhllama.cli.commands.eval.builder` turns that into `zhllama eval NAME`,
so no plugin imports the CLI.
"""

from __future__ import annotations

from pathlib import Path

from zhllama.core.assets import data_path
from zhllama.core.errors import UserError
from zhllama.core.evaluation import mcq
from zhllama.core.evaluation.runner import McqSettings
from zhllama.core.paths import read_json
from zhllama.core.plugin_api import BenchmarkPlugin
from zhllama.plugins.benchmarks.prompt_styles import Cla2Style, PromptStyle


class Exam(BenchmarkPlugin):
    """A multiple-choice benchmark plugin; subclasses describe their file layout."""

    settings_class = McqSettings  # the flags of `zhllama eval NAME` (the generic eval command)
    examples: tuple[str, ...] = ()

    splits: tuple[str, ...] = ()  # the first is the default
    # --prompt-style NAME -> the style object (cla2: the CLA2 C-Eval evaluator's system prompt, and its
    # default --constrained_decoding True, i.e. letter logits)
    prompt_styles: dict[str, PromptStyle] = {
        "default": PromptStyle(),
        "cla2": Cla2Style(system="You are a helpful assistant. 你是一个乐于助人的助手。", mode="logits"),
    }
    columns: dict[str, str] = {}

    # ---- the generic eval command: check -> prepare -> run -> table ----------------------------
    def check(self, settings: McqSettings, data_dir: Path):
        """The run's settings, checked once (`CheckedMcqSettings`)."""
        return settings.checked(self)

    def prepare(self, data_dir: Path, settings):
        """(questions, dev, names, categories): every data file read and checked before the model loads."""
        from zhllama.core.evaluation.runner import load_exam

        return load_exam(self, data_dir, settings)

    def run(self, model, data_dir: Path, output: Path, settings, prepared, model_id: str) -> dict:
        from zhllama.core.evaluation.runner import run_mcq

        return run_mcq(self, model, data_dir, output, settings, model_id=model_id, exam=prepared)

    def table(self, summary: dict, settings):
        from zhllama.core import console

        rows = [(c, v["correct"], v["total"], round(v["accuracy"], 2)) for c, v in summary["categories"].items()]
        overall = summary["overall"]
        rows.append(("overall", overall["correct"], overall["total"], round(overall["accuracy"], 2)))
        title = f"{self.name} {settings.split} ({settings.shots}-shot, {settings.mode}, {settings.prompt_style})"
        return console.table(title, ["category", "correct", "total", "accuracy %"], rows)

    def mapping(self, data_dir: Path) -> dict[str, tuple[str, str]]:
        """subject -> (Chinese name, category); a mapping file in the data folder wins over the shipped one."""
        raise NotImplementedError

    def split_file(self, data_dir: Path, split: str, subject: str) -> Path:
        raise NotImplementedError

    def subjects_in(self, data_dir: Path, split: str) -> list[str]:
        raise NotImplementedError

    def header(self, subject: str, names: dict[str, str], style: str = "default") -> str:
        """The subject header of a prompt style (cla2 prompts are built by `prompt_styles.cla2_prompt`)."""
        return self.prompt_styles[style].subject_header(subject, names)

    def load(self, data_dir: Path, split: str):
        """(questions by subject, dev examples by subject, Chinese names, categories)."""
        data_dir = Path(data_dir)
        if split not in self.splits:
            raise UserError(f"--split: '{split}' is not one of {', '.join(self.splits)} for {self.name}")
        if not data_dir.is_dir():
            raise UserError(f"{data_dir}: data folder not found")
        mapping = self.mapping(data_dir)
        subjects = self.subjects_in(data_dir, split)
        if not subjects:
            raise UserError(f"{data_dir}: no {self.name} files for split '{split}'")
        unknown = [s for s in subjects if s not in mapping]
        if unknown:
            raise UserError(
                f"{self.split_file(data_dir, split, unknown[0])}: subject '{unknown[0]}' is not in the subject mapping"
            )
        questions = {}
        for s in subjects:
            path = self.split_file(data_dir, split, s)
            questions[s] = mcq.read_csv_questions(path, s, self.columns, require_answer=split != "test")
            if not questions[s]:
                raise UserError(f"{path}: no questions (only a header); remove the file or fill it")
        dev = {}
        for s in subjects:
            dev_file = self.split_file(data_dir, "dev", s)
            if dev_file.is_file():
                dev[s] = mcq.read_csv_questions(dev_file, s, self.columns, require_answer=True)
        names = {s: mapping[s][0] for s in mapping}
        categories = {s: mapping[s][1] for s in mapping}
        return questions, dev, names, categories


def read_mapping(local: Path, shipped: str, convert) -> dict[str, tuple[str, str]]:
    path = local if local.is_file() else data_path("benchmarks", shipped)
    data = read_json(path)
    try:
        return convert(data)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise UserError(f"{path}: not a valid subject mapping ({exc})") from exc
