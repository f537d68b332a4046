"""How much CPU work on one CPU slows Python on another, whatever its priority (not a
test): the part of ``bench/ai.py``'s figures no scheduling class can remove.

A fixed piece of pure-Python work (dict inserts and a sum, about 3 ms) runs pinned to
the first CPU, timed ``--reps`` times (median), alone and while a process pinned to the
second CPU, in Linux's ``SCHED_IDLE`` class (as the AI model's worker), multiplies
matrices of ``--rows`` x 256 float32 (400: the burner of ``bench/ai.py --busy burn``;
2,000: about a 2,000-message window's embeddings) — in alternating rounds; each
round's ratio to the median alone, and their median. On separate physical cores every
ratio is about 1; where the two CPUs are hyperthreads of one core (a VM's vCPUs may be,
some of the time) or share a cache and memory bandwidth, some are not, and the server's
event loop pays that for any CPU work beside it: the model's, or anyone's. On the
2-core VM of 2026-12-07 most rounds were 0.93-1.10 and about one in six 1.2-1.8 (a
first try: three rounds of 1.06, 1.70 and 1.94), while the rounds alone stayed within
3.1-3.6 ms.

    .venv/bin/python bench/cpu_interference.py            # about 20 s
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

BURNER = """
import os, sys
os.sched_setaffinity(0, {%d})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
import numpy as np
a = np.random.default_rng(1).random((%d, 256), dtype=np.float32)
while True:
    (a @ a.T).argmax()
"""


def work() -> int:
    d = {}
    for i in range(20_000):
        d[str(i)] = i * 2
    return sum(d.values())


def timed(reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=60)
    p.add_argument("--rows", type=int, nargs="+", default=[400, 2000])
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs two CPUs")
    os.sched_setaffinity(0, {cpus[0]})
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    alone: list[float] = []
    beside: dict[int, list[float]] = {rows: [] for rows in args.rows}
    for _ in range(args.rounds):
        alone.append(timed(args.reps))
        for rows in args.rows:
            burner = subprocess.Popen([sys.executable, "-c", BURNER % (cpus[1], rows)],
                                      env=env)
            try:
                time.sleep(0.5)  # numpy imported, the products running
                beside[rows].append(timed(args.reps))
            finally:
                burner.kill()
                burner.wait()
    alone.append(timed(args.reps))
    base = statistics.median(alone)
    print(f"pure-Python work on CPU {cpus[0]}: alone {base * 1000:.2f} ms "
          f"(rounds {', '.join(f'{x * 1000:.2f}' for x in alone)})")
    for rows, values in beside.items():
        ratios = [v / base for v in values]
        print(f"  beside a SCHED_IDLE process multiplying {rows} x 256 matrices on CPU "
              f"{cpus[1]}: {statistics.median(values) * 1000:.2f} ms, "
              f"x{statistics.median(ratios):.2f} (rounds "
              f"{', '.join(f'x{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
