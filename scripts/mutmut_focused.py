"""Check mutmut's mutants against a focused test set, fast (not part of the product,
not run in CI).

mutmut re-runs every test that touches a function, so for functions every test touches
(login, the key ring, the service's start) one mutant costs most of the selection. This
driver uses mutmut's own trampoline (``MUTANT_UNDER_TEST``, read on every call) and
pays pytest's start-up and collection once per test set: pytest collects the set in a
warm parent, then forks one child per mutant that sets ``MUTANT_UNDER_TEST`` and runs
the collected tests in order, stopping at the first failure (``-x``). A failure =
killed, all passed = survived, past the deadline = timeout (the child's process group
is killed). The parent first runs the set once without a mutant and stops if it fails.

Run from the repository root after ``mutmut run`` generated ``mutants/``::

    nice -n 19 .venv/bin/python scripts/mutmut_focused.py --sets SETS.json \
        --out mutants/focused.jsonl [--jobs 2] [--timeout 120] NAME-OR-PREFIX ...

``SETS.json`` maps a mutant-name prefix (``module.`` or ``module.xǁClassǁfunction``)
to pytest node ids or files, run in that order (put the fast, pointed tests first);
the longest matching prefix wins. Each output line is ``{"mutant", "verdict", "rc",
"seconds", "set"}``; mutants already in the output are skipped, so a run can be stopped
and resumed. Only mutants mutmut has ``not checked`` are taken unless
``--all-statuses`` (to cross-check verdicts mutmut already has).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# mutmut's selection: SQLite and the PostgreSQL-parametrised cases, no `postgres`-marked,
# Cassandra or slow tests (see [tool.mutmut] in pyproject.toml)
PYTEST_ARGS = ["-q", "-p", "no:randomly", "-p", "no:cacheprovider", "--no-header",
               "-m", "not postgres and not cassandra and not slow"]
HERE = Path(__file__).resolve().parent


# -- the pytest side (loaded with -p mutmut_focused in the warm parent) -----------------
def _run_items(session: Any, only: list[str] | None, always: list[str], note: Path) -> int:
    items = session.items
    if only is not None:
        wanted = set(only) | set(always)
        items = [item for item in items if item.nodeid in wanted]
    for i, item in enumerate(items):
        nextitem = items[i + 1] if i + 1 < len(items) else None
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        if session.testsfailed:
            note.write_text(item.nodeid)  # the test that killed it
            # tear the remaining fixtures down (session-scoped servers) before leaving
            session._setupstate.teardown_exact(None)
            return 1
    return 0


def _warm_up() -> None:
    """Import the project once in the parent (the mutated modules are large: compiling
    them again in every child cost seconds per mutant)."""
    import importlib
    import pkgutil

    for package in ("secureconnect", "secureconnect_plugins"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            if ".migrations" in info.name:
                continue
            with contextlib.suppress(Exception):  # an optional dependency missing: skip it
                importlib.import_module(info.name)


def pytest_runtestloop(session: Any) -> bool | None:
    spec = os.environ.get("MUTMUT_FOCUSED_SPEC")
    if not spec:
        return None
    conf = json.loads(Path(spec).read_text())
    if not session.items:
        with open(conf["out"], "a") as sink:
            for mutant in conf["mutants"]:
                sink.write(json.dumps({"mutant": mutant, "verdict": "no tests", "rc": 5,
                                       "seconds": 0, "set": conf["set"]}) + "\n")
        return True
    per_mutant: dict[str, list[str]] = {}
    if conf.get("per_mutant"):
        per_mutant = json.loads(Path(conf["per_mutant"]).read_text())
    collected = {item.nodeid for item in session.items}
    always = conf.get("always", [])
    mutants = []
    with open(conf["out"], "a") as sink:
        for mutant in conf["mutants"]:
            if mutant in per_mutant and not collected & set(per_mutant[mutant] + always):
                # no test of the set executes the changed statement: nothing can kill it
                sink.write(json.dumps({"mutant": mutant, "verdict": "survived", "rc": 0,
                                       "seconds": 0, "set": conf["set"],
                                       "not_reached": True}) + "\n")
            else:
                mutants.append(mutant)
    notes = Path(conf["out"]).parent / "focused-logs"
    notes.mkdir(exist_ok=True)
    _warm_up()
    queue: list[str] = ["", *mutants]  # "" = the clean run, first and alone
    running: dict[int, tuple[str, float]] = {}
    started = time.monotonic()
    done = 0
    with open(conf["out"], "a") as sink:
        while queue or running:
            limit = 1 if (queue and queue[0] == "") or "" in {m for m, _ in running.values()} \
                else conf["jobs"]
            while queue and len(running) < limit:
                mutant = queue.pop(0)
                pid = os.fork()
                if pid == 0:
                    os.setpgid(0, 0)
                    os.environ["MUTANT_UNDER_TEST"] = mutant
                    rc = 1
                    try:
                        rc = _run_items(session, per_mutant.get(mutant) if mutant else None,
                                        conf.get("always", []), notes / f"{os.getpid()}")
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(rc)
                running[pid] = (mutant, time.monotonic())
                if mutant == "":
                    break
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                now = time.monotonic()
                for p, (_, t0) in running.items():
                    if now - t0 > conf["timeout"]:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(p, signal.SIGKILL)
                time.sleep(0.02)
                continue
            if pid not in running:
                continue
            mutant, t0 = running.pop(pid)
            seconds = round(time.monotonic() - t0, 1)
            if os.WIFSIGNALED(wstatus):
                rc, verdict = -os.WTERMSIG(wstatus), "timeout"
            else:
                rc = os.WEXITSTATUS(wstatus)
                verdict = {0: "survived", 1: "killed"}.get(rc, f"error {rc}")
            if mutant == "":
                print(f"\nMUTMUT-FOCUSED clean run of {conf['set']}: rc {rc} in {seconds}s",
                      flush=True)
                if rc != 0:
                    print("MUTMUT-FOCUSED the set fails without a mutant: stop", flush=True)
                    queue.clear()
                continue
            done += 1
            record = {"mutant": mutant, "verdict": verdict, "rc": rc, "seconds": seconds,
                      "set": conf["set"]}
            note = notes / str(pid)
            if note.exists():
                record["killed_by"] = note.read_text()
                note.unlink()
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(f"\nMUTMUT-FOCUSED [{done}/{len(mutants)} "
                  f"{time.monotonic() - started:.0f}s] {verdict} {seconds}s {mutant}", flush=True)
    session.testsfailed = 0
    return True


# -- the driver ---------------------------------------------------------------------------
def all_mutants(repo: Path) -> dict[str, str]:
    """mutmut's status of every mutant (``mutmut results --all true``)."""
    out = subprocess.run([str(repo / ".venv/bin/mutmut"), "results", "--all", "true"],
                         cwd=repo, capture_output=True, text=True, check=True).stdout
    status = {}
    for line in out.splitlines():
        name, _, verdict = line.strip().rpartition(": ")
        if name:
            status[name] = verdict
    return status


def pick_set(name: str, sets: dict[str, list[str]]) -> str | None:
    best = None
    for prefix in sets:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--all-statuses", action="store_true")
    ap.add_argument("--extra", default="", help="more pytest arguments, space separated")
    ap.add_argument("--always", default="",
                    help="node ids (space separated) run last for every mutant, whatever "
                         "--per-mutant says (tests written during the run: a kill by one of "
                         "them means every older test of the set passed)")
    ap.add_argument("--markexpr", default="",
                    help="instead of mutmut's -m (e.g. to add the postgres-marked tests)")
    ap.add_argument("--per-mutant", default="",
                    help="JSON: mutant -> the tests that reach its statement "
                         "(scripts/mutmut_line_tests.py); others of the set are not run")
    ap.add_argument("names", nargs="+", help="mutant names or name prefixes")
    args = ap.parse_args()

    repo = Path.cwd()
    sets: dict[str, list[str]] = json.loads(Path(args.sets).read_text())
    out = Path(args.out).resolve()
    done = set()
    if out.exists():
        done = {json.loads(line)["mutant"] for line in out.read_text().splitlines() if line}
    status = all_mutants(repo)
    todo = [m for m in status
            if any(m == n or (m.startswith(n) and "__mutmut_" not in n) for n in args.names)
            and (args.all_statuses or status[m] == "not checked") and m not in done]
    # in the order the names were given (most important first)
    todo.sort(key=lambda m: next(i for i, n in enumerate(args.names)
                                 if m == n or (m.startswith(n) and "__mutmut_" not in n)))
    by_set: dict[str, list[str]] = {}
    for m in todo:
        prefix = pick_set(m, sets)
        if prefix is None:
            print(f"no test set for {m}", file=sys.stderr)
            continue
        by_set.setdefault(prefix, []).append(m)
    print(f"{len(todo)} mutants to check in {len(by_set)} sets", flush=True)
    logs = repo / "mutants" / "focused-logs"
    logs.mkdir(exist_ok=True)
    for prefix, mutants in by_set.items():
        spec = logs / f"spec-{os.getpid()}.json"
        spec.write_text(json.dumps({"set": prefix, "mutants": mutants, "out": str(out),
                                    "jobs": args.jobs, "timeout": args.timeout,
                                    "always": args.always.split(),
                                    "per_mutant": args.per_mutant
                                    and str(Path(args.per_mutant).resolve())}))
        env = {**os.environ, "MUTMUT_FOCUSED_SPEC": str(spec), "MUTANT_UNDER_TEST": "",
               "PYTHONPATH": str(HERE)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # cache the compiled mutated modules
        print(f"set {prefix}: {len(mutants)} mutants, {len(sets[prefix])} tests", flush=True)
        with (logs / f"{prefix}log").open("a") as log:
            pytest_args = [*PYTEST_ARGS[:-1], args.markexpr] if args.markexpr else PYTEST_ARGS
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "mutmut_focused", *pytest_args,
                 *args.extra.split(), *sets[prefix], *args.always.split()],
                cwd=repo / "mutants", env=env, stdout=subprocess.PIPE, stderr=log, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.startswith("MUTMUT-FOCUSED"):
                    print(line.rstrip(), flush=True)
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
