"""The README lists only what exists: its commands, files and plugins."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from secureconnect.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
#: files a deployment creates (`secureconnect init`), not shipped
GENERATED = {"config/.secrets.toml", "config/settings.local.toml"}
README = (ROOT / "README.md").read_text()


def test_every_command_the_readme_shows_exists():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    shown = set(re.findall(r"^secureconnect ([a-z][a-z-]+)", README, re.M))
    assert shown, "the README shows no command"
    assert shown <= set(sub.choices), sorted(shown - set(sub.choices))


def test_every_path_and_plugin_the_readme_names_exists():
    paths = set(re.findall(r"`((?:docs|deploy|config|plugins|scripts|tests)/[\w./-]*)`",
                           README))
    missing = [p for p in sorted(paths - GENERATED) if not (ROOT / p).exists()]
    assert not missing, missing
    for plugin in re.findall(r"`plugins/(\w+)`", README):
        assert (ROOT / "plugins" / plugin / "__init__.py").exists(), plugin
