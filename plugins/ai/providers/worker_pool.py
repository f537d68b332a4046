"""The local model's worker processes, driven from the event loop over their pipes.

Why not :class:`concurrent.futures.ProcessPoolExecutor`: every ``submit`` hands work to
two helper threads of the server process (the pool's manager and its queue's feeder),
and the event loop's thread waits for the GIL while they take their turn. On a busy
core that wait was 4 to 5 ms of wall time for 0.1 ms of work, once per call to the model
(measured: a 1 ms ticker on the loop saw 5 ms stalls with the executor and none over
1.1 ms with pipes; ``bench/ai.py``'s loop watch listed the submit as the longest
callback of the busy rounds). Here the loop writes a request to a worker's stdin and
reads the answer from its stdout through asyncio's own pipe transports: no thread of
the server process touches a request.

Protocol, one request at a time per worker: a frame is an 8-byte big-endian length and
a pickle. The worker answers ``("ready", None)`` once its model is loaded, then for each
request ``(function name, args)`` one of ``("ok", result)``, ``("unavailable",
message)`` (the provider's own 503 text) or ``("error", exception type name)`` — never
an exception's message, which may quote the text the model was given.

A worker that dies (killed, out of memory) fails the request it was serving with
:class:`WorkerDied`; the next request starts a fresh one. A request whose caller gives
up (timeout, disconnect) still runs to its end in the worker, which then serves the
next one: the pipes never go out of step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
import sys
from typing import Any

from .base import ProviderUnavailable

log = logging.getLogger(__name__)

FRAME = struct.Struct("!Q")
#: the functions of :mod:`.embedding` a request may name
FUNCTIONS = frozenset({"worker_pick", "worker_pick_many", "worker_replies",
                       "worker_summarize_window"})
#: how long a worker may take to load its model
START_TIMEOUT = 120.0
#: how long a closing worker gets to exit once its stdin is closed
STOP_TIMEOUT = 5.0


class WorkerDied(Exception):
    """The worker process ended while it served a request."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def exchange(self, request: Any) -> Any:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            stdin.write(FRAME.pack(len(data)) + data)
            await stdin.drain()
            (size,) = FRAME.unpack(await stdout.readexactly(FRAME.size))
            return pickle.loads(await stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerDied(f"the model worker {self.pid} ended") from exc

    async def stop(self) -> None:
        process = self.process
        if process.returncode is None and process.stdin is not None:
            process.stdin.close()  # end of input: the worker exits
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class WorkerPool:
    """``size`` worker processes at nice ``nice`` (and ``SCHED_IDLE`` when asked), each
    keeping up to ``cache_size`` message embeddings; :meth:`call` runs one of
    :data:`FUNCTIONS` on an idle worker."""

    def __init__(self, size: int, *, nice: int, sched_idle: bool, cache_size: int = 0) -> None:
        self.size = size
        self.nice = nice
        self.sched_idle = sched_idle
        self.cache_size = cache_size
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._starting = 0
        self._closed = False

    @property
    def pids(self) -> list[int]:
        return sorted(w.pid for w in self._workers)

    async def start(self) -> None:
        """Start every worker and wait until each has its model (fails with the fix)."""
        await asyncio.gather(*(self._add() for _ in range(self.size - len(self._workers))))

    async def _add(self) -> None:
        self._starting += 1
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"{__package__}.worker", str(self.nice),
                "1" if self.sched_idle else "0", str(self.cache_size),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            worker = _Worker(process)
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    status, detail = await worker.exchange(("ready", ()))
            except BaseException:
                await _kill(process)
                raise
            if status != "ok":
                await worker.stop()
                raise ProviderUnavailable(str(detail) if status == "unavailable" else
                                          "the local AI model worker could not start; "
                                          "see the server log")
        except WorkerDied:
            raise ProviderUnavailable(
                "the local AI model worker could not start; see the server log") from None
        finally:
            self._starting -= 1
        if self._closed:
            await worker.stop()
            raise ProviderUnavailable("the AI provider is shutting down")
        self._workers.add(worker)
        self._idle.put_nowait(worker)

    async def call(self, function: str, *args: Any) -> Any:
        if function not in FUNCTIONS:
            raise ValueError(f"not a model worker function: {function}")
        if self._closed:
            raise ProviderUnavailable("the AI provider is shutting down")
        if self._idle.empty() and len(self._workers) + self._starting < self.size:
            await self._add()  # one died before: its replacement
        worker = await self._idle.get()
        # the exchange finishes even when the caller stops waiting: the worker is then
        # free for the next request, with its pipes in step
        task = asyncio.ensure_future(self._exchange(worker, (function, args)))
        task.add_done_callback(_retrieve)
        status, detail = await asyncio.shield(task)
        if status == "ok":
            return detail
        if status == "unavailable":
            raise ProviderUnavailable(str(detail))
        raise ModelFailed(str(detail))

    async def _exchange(self, worker: _Worker, request: Any) -> Any:
        try:
            answer = await worker.exchange(request)
        except BaseException:
            self._workers.discard(worker)
            await _kill(worker.process)
            raise
        self._idle.put_nowait(worker)
        return answer

    async def close(self) -> None:
        self._closed = True
        workers, self._workers = list(self._workers), set()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)


class ModelFailed(Exception):
    """The model raised in the worker (its type name only: the message may quote text)."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # (retrieved: a caller that gave up does not log it as lost)


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    with contextlib.suppress(Exception):
        await process.wait()


# -- the worker's side ---------------------------------------------------------------------
def serve(nice: int, sched_idle: bool, cache_size: int = 0) -> None:
    """The worker process's main loop (``python -m ...providers.worker``)."""
    # the protocol owns the original stdout; anything printed goes to stderr instead
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = os.fdopen(os.dup(0), "rb")

    def send(message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(FRAME.pack(len(data)) + data)
        out.flush()

    def receive() -> Any:
        header = inp.read(FRAME.size)
        if len(header) < FRAME.size:
            return None  # the server closed our stdin (or exited): done
        (size,) = FRAME.unpack(header)
        return pickle.loads(inp.read(size))

    from . import worker

    request = receive()  # ("ready", ())
    try:
        worker.init(nice, sched_idle, cache_size)
    except ProviderUnavailable as exc:
        send(("unavailable", exc.detail))
        return
    except Exception as exc:
        log.error("ai: the model worker could not start (%s)", type(exc).__name__)
        send(("error", type(exc).__name__))
        return
    from . import embedding

    send(("ok", None))
    while (request := receive()) is not None:
        name, args = request
        try:
            answer: tuple[str, Any] = ("ok", getattr(embedding, name)(*args)) \
                if name in FUNCTIONS else ("error", "UnknownFunction")
        except ProviderUnavailable as exc:
            answer = ("unavailable", exc.detail)
        except Exception as exc:
            answer = ("error", type(exc).__name__)
        send(answer)
