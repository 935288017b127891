"""Plugins are found through entry points: a fake third-party dist-info on sys.path is listed and usable."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from zhllama.core import registry
from zhllama.core.errors import MissingDependencyError, UserError


@pytest.fixture
def fake_plugin_dist(tmp_path, monkeypatch):
    """Install nothing: write a module and a *.dist-info with entry_points.txt into a sys.path dir."""
    (tmp_path / "zh_fake_plugin.py").write_text(
        textwrap.dedent(
            """
            class Shout:
                name = "shout"
                description = "uppercases everything (test plugin)"
                requires = ()
                install_hint = ""
                stop_strings = ()
                default_system = None

                def transform(self, text):
                    return text.upper()

            class NeedsMissing:
                name = "needs-missing"
                description = "needs a package that is not installed"
                requires = ("zh_definitely_not_installed_pkg",)
                install_hint = "pip install zh-definitely-not-installed"
            """
        )
    )
    info = tmp_path / "zh_fake_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zh-fake-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[zhllama.quantizers]\nshout = zh_fake_plugin:Shout\nneeds-missing = zh_fake_plugin:NeedsMissing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("zh_fake_plugin", None)


def test_fake_plugin_is_discovered_and_usable(fake_plugin_dist):
    assert "shout" in registry.names("quantizers")
    plugin = registry.load("quantizers", "shout")()
    assert plugin.transform("gguf") == "GGUF"


def test_plugins_command_lists_fake_plugin_with_install_hint(fake_plugin_dist, run_cli):
    code, out, err = run_cli("--json", "plugins")
    assert code == 0, err
    by_name = {p["name"]: p for p in json.loads(out)["plugins"]}
    assert by_name["shout"]["available"] is True
    assert by_name["shout"]["distribution"] == "zh-fake-plugin"
    missing = by_name["needs-missing"]
    assert missing["available"] is False
    assert missing["missing"] == ["zh_definitely_not_installed_pkg"]
    assert missing["install_hint"] == "pip install zh-definitely-not-installed"


def test_missing_dependency_error_says_how_to_install(fake_plugin_dist):
    with pytest.raises(MissingDependencyError, match="pip install zh-definitely-not-installed"):
        registry.load("quantizers", "needs-missing")


def test_unknown_plugin_suggests_closest(fake_plugin_dist):
    with pytest.raises(UserError, match="did you mean 'shout'"):
        registry.load("quantizers", "shoutt")


def test_builtin_templates_come_through_entry_points():
    assert {"alpaca", "llama2-zh", "chatml", "none"} <= set(registry.names("templates"))
    for info in registry.describe("templates"):
        assert info.distribution == "zhllama"
        assert info.available
