"""docs/plugins.md's recipes (job signature, the kernel in a handler, request models,
testing) run exactly as printed: the plugin block and its test block are written to
files and the test is run with pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> dict[str, str]:
    doc = (ROOT / "docs" / "plugins.md").read_text()
    recipes = doc.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    out = {}
    for block in re.findall(r"```python\n(.*?)```", recipes, re.S):
        first = block.splitlines()[0]
        name = re.match(r"# (\w+\.py)", first)
        assert name, f"a recipe block must start with '# file.py': {first!r}"
        out[name[1]] = block
    return out


def test_recipes_run_as_printed(tmp_path):
    blocks = _blocks()
    assert set(blocks) == {"recipe_plugin.py", "test_recipe_plugin.py"}
    for name, text in blocks.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
