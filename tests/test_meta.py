"""Meta-tests: every hook has a test and a documentation section; every package is packaged."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from secureconnect import hookspecs
from secureconnect_plugins.chat import hookspecs as chat_hookspecs

ROOT = Path(__file__).resolve().parents[1]
#: the kernel's hooks and those a built-in plugin declares for others (chat's)
HOOKS = sorted(n for module in (hookspecs, chat_hookspecs) for n in dir(module)
               if n.startswith("sc_") and n != "sc_"
               and callable(getattr(module, n)) and n not in ("hookspec",))


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        names |= {n.name for n in ast.walk(tree)
                  if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return names


def test_every_hook_has_a_test():
    names = _test_names()
    missing = [h for h in HOOKS if f"test_hook_{h}" not in names]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_every_hook_has_a_docs_section():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    sections = set(re.findall(r"^### `(sc_\w+)", doc, re.M))
    assert not set(HOOKS) - sections, f"undocumented hooks: {sorted(set(HOOKS) - sections)}"
    assert not sections - set(HOOKS), f"docs name unknown hooks: {sorted(sections - set(HOOKS))}"


def test_every_package_directory_is_packaged():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for base, name in (("secureconnect", "secureconnect"), ("plugins", "secureconnect_plugins")):
        # every folder that ships something: packages, and data folders (Alembic
        # revisions, templates, defaults) which setuptools wants listed as namespace
        # packages too (else "Package would be ignored" warnings on every install)
        folders = {f.parent for f in (ROOT / base).rglob("*") if f.is_file()
                   and "__pycache__" not in f.parts and not f.name.startswith(".")}
        for folder in folders:
            rel = folder.relative_to(ROOT / base).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"missing: {sorted(found - listed)}, stale: {sorted(listed - found)}"
