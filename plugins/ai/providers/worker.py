"""Start-up of a model worker process (``ai.local_executor = "process"``).

The server starts each worker as ``python -m secureconnect_plugins.ai.providers.worker
<nice> <sched_idle> <embedding cache size>`` and talks to it over its stdin/stdout
(:mod:`.worker_pool`).
:func:`init` runs first in the fresh worker, before anything has imported numpy or the
tokenizer, and in this order:

1. caps the math libraries' thread pools at one thread each (:data:`THREAD_ENV`: BLAS,
   OpenMP, the tokenizer's Rayon pool) — they read these variables once, when they load,
   so the variables are set here and not in the server's environment;
2. lowers the CPU priority of the process (its only thread at that point): nice
   ``local_nice`` and, with ``local_sched_idle``, Linux's ``SCHED_IDLE`` class, under
   which the worker runs on what the server's threads leave of a core and never
   preempts them;
3. only then imports the model (numpy and the tokenizer start their threads now, and
   Linux threads inherit their creator's nice value and scheduling class).

This module imports nothing heavy itself. Should a thread exist before step 2 anyway (a
BLAS pool started by something the plugin package imported on the way), step 2 lowers
it too: it goes through every thread of the process (a test checks them
all).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from secureconnect.config import set_environ

log = logging.getLogger(__name__)

#: one thread per library: the worker is one job at a time on one core at most
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _threads() -> list[int]:
    """Native ids of this process's threads (Linux); just the caller elsewhere."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def lower_process_priority(nice: int, sched_idle: bool) -> None:
    """Lower the CPU priority of every thread of this process. On Linux nice values
    and the scheduling class belong to each thread and threads inherit them from the
    thread that starts them; a thread already running (a BLAS pool started when the
    parent's main module was imported again in this process) is lowered too. Where the
    platform has no such call nothing happens."""
    for tid in _threads():
        if nice > 0:
            with contextlib.suppress(AttributeError, OSError):
                os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(
                    os.PRIO_PROCESS, tid)))
        if sched_idle:
            with contextlib.suppress(AttributeError, OSError):
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))


def init(nice: int, sched_idle: bool, cache_size: int = 0) -> None:
    """The pool initializer: threads capped, priority lowered, then the model loaded."""
    set_environ(THREAD_ENV)
    if "numpy" in sys.modules:
        # something imported on the way to this module imports numpy: its
        # thread pool is already sized (the threads are still lowered below)
        log.info("ai: numpy was loaded before the model worker capped its threads")
    lower_process_priority(nice, sched_idle)
    from . import embedding

    embedding.worker_load(cache_size)


if __name__ == "__main__":
    from .worker_pool import serve

    serve(int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]))
