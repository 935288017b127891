"""`--config FILE.yaml`: option defaults from a YAML file, overridden by flags.

Keys are option names (`learning-rate` or `learning_rate`). The file applies to whichever
command runs; a key that the command does not have is an error naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zhllama.core.errors import UserError
from zhllama.core.paths import read_text_file


def load_config(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    text = read_text_file(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{path}: invalid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: config must be a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


class CommandDefaults(dict):
    """A Click `default_map` that serves the same flat option mapping at every command depth.

    Click looks up a sub-command's defaults with `default_map.get(command_name)`; returning the
    mapping itself for command names lets one flat YAML file configure `vocab merge` as well as
    `pretrain`.
    """

    def __init__(self, values: dict[str, Any], command_names: set[str]):
        super().__init__(values)
        self.command_names = command_names

    def get(self, key, default=None):  # noqa: D401 - Click's lookup protocol
        if key in self:
            return self[key]
        if key in self.command_names:
            return self
        return default
