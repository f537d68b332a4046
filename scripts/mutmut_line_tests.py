"""For each mutmut mutant, the tests that execute the statement it changes (not part of
the product, not run in CI; feeds ``scripts/mutmut_focused.py --per-mutant``).

A mutant changes one statement; a test that never executes that statement runs the
original code and cannot kill it. So the tests worth running for a mutant are those
whose per-test coverage (``pytest --cov-context=test`` run in ``mutants/`` with no mutant
active: the original functions' copies there) includes a line of the innermost
statement around the change — the whole function for a changed signature. A mutant no
test reaches needs no run: it survives.

    .venv/bin/python scripts/mutmut_line_tests.py --coverage FILE \
        [--coverage FILE ...] --out per-mutant.json NAME-OR-PREFIX ...
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from coverage import CoverageData


def statement_lines(tree: ast.Module, func: ast.AST, line: int) -> range:
    """The lines of the innermost statement of ``func`` containing ``line``."""
    best: ast.stmt = func  # type: ignore[assignment]
    for node in ast.walk(func):
        if isinstance(node, ast.stmt) and node is not func and node.end_lineno is not None \
                and node.lineno <= line <= node.end_lineno \
                and node.end_lineno - node.lineno <= (best.end_lineno or 0) - best.lineno:
            best = node
    if isinstance(best, ast.FunctionDef | ast.AsyncFunctionDef) and best is func:
        return range(func.lineno, (func.end_lineno or func.lineno) + 1)  # type: ignore[attr-defined]
    if isinstance(best, ast.If | ast.For | ast.AsyncFor | ast.While | ast.With
                  | ast.AsyncWith | ast.Try):
        # a compound statement: its header lines are what the mutant changed
        first_body = best.body[0].lineno if best.body else best.end_lineno
        return range(best.lineno, max(best.lineno, (first_body or best.lineno) - 1) + 1)
    return range(best.lineno, (best.end_lineno or best.lineno) + 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coverage", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()
    repo = Path.cwd()
    sys.path.insert(0, str(repo / ".venv/lib"))
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    out = subprocess.run([str(repo / ".venv/bin/mutmut"), "results", "--all", "true"],
                         cwd=repo, capture_output=True, text=True, check=True).stdout
    mutants = [line.strip().rpartition(": ")[0] for line in out.splitlines()]
    mutants = [m for m in mutants if m and any(m.startswith(n) for n in args.names)]

    # per file suffix: line -> tests that executed it
    by_file: dict[str, dict[int, set[str]]] = {}
    for cov in args.coverage:
        data = CoverageData(basename=cov)
        data.read()
        for measured in data.measured_files():
            lines = by_file.setdefault(measured, {})
            for lineno, contexts in data.contexts_by_lineno(measured).items():
                lines.setdefault(lineno, set()).update(
                    c.rpartition("|")[0] for c in contexts if "|" in c)

    result: dict[str, list[str]] = {}
    trees: dict[str, tuple[list[str], ast.Module, dict[str, list[int]]]] = {}
    for mutant in mutants:
        module, _, rest = mutant.partition(".x")
        mod_path = module.replace(".", "/") + ".py"
        fn = "x" + rest.rsplit("__mutmut_", 1)[0]
        if mod_path not in trees:
            path = repo / "mutants" / mod_path
            text = path.read_text()
            spans = json.loads(Path(str(path) + ".spans").read_text())["spans"]
            trees[mod_path] = (text.splitlines(), ast.parse(text), spans)
        src_lines, tree, spans = trees[mod_path]
        # the original function's copy in the mutated file (what the clean run executes)
        first, last = spans[fn + "__mutmut_orig"]
        func = next(n for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                    and first <= n.lineno <= last and n.name.endswith("__mutmut_orig"))
        diff = get_diff_for_mutant(mutant, path=Path(mod_path))
        changed: set[int] = set()
        for old in re.findall(r"^-(?!--)(.*)$", diff, re.M):
            want = old.strip()
            changed.update(i for i in range(first, last + 1)
                           if src_lines[i - 1].strip() == want)
        if not changed:  # an insertion only, or not found: the whole function
            changed = set(range(func.lineno, (func.end_lineno or last) + 1))
        lines: set[int] = set()
        for line in changed:
            lines.update(statement_lines(tree, func, line))
        measured = next((f for f in by_file if f.endswith("mutants/" + mod_path)), None)
        tests: set[str] = set()
        if measured is not None:
            for line in lines:
                tests.update(by_file[measured].get(line, ()))
        result[mutant] = sorted(tests)
    Path(args.out).write_text(json.dumps(result, indent=0))
    reached = sum(1 for t in result.values() if t)
    print(f"{len(result)} mutants, {reached} reached by a test, {len(result) - reached} by none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
