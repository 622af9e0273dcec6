"""Worker processes that never outlive their parent, and SIGTERM handled like Ctrl-C.

* :func:`imap_in_pool` is THE way to run work in worker processes
  (``spawn``): each worker asks the kernel to kill it when its parent dies
  (``PR_SET_PDEATHSIG``, even when the parent is SIGKILLed), exits at once if
  the parent is already gone, and ignores Ctrl-C (the parent handles it).
  When the parent stops iterating for any reason (an interrupt, SIGTERM, a
  full disk, an error), the workers are killed before the exception goes on,
  so none is still writing afterwards.
* :func:`terminate_like_interrupt` makes SIGTERM raise :class:`Terminated` (a
  ``KeyboardInterrupt``) in the main thread, so a terminated command unwinds
  like an interrupted one: locks released, temporaries removed, one message.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Callable, Iterable, Iterator

from .errors import JukemirError

_PR_SET_PDEATHSIG = 1


class WorkerDied(JukemirError):
    """A worker process was killed from outside (e.g. by the out-of-memory killer)."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (raised in the main thread, like Ctrl-C's KeyboardInterrupt)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def terminate_like_interrupt() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (call from the main thread)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def die_with_parent(parent_pid: int) -> None:
    """Make this process die when ``parent_pid`` (its parent) does; exit now if it already has.

    Linux only (``prctl``); elsewhere only the check of the parent's pid remains.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _init_worker(parent_pid: int) -> None:
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked while the parent started us


def _worker_loop(parent_pid: int, fn: Callable, tasks, results) -> None:
    """A worker: run ``fn`` on each ``(index, item)`` from ``tasks`` until ``None``; send ``(index, ok, value)``."""
    _init_worker(parent_pid)
    while True:
        job = tasks.get()
        if job is None:
            return
        index, item = job
        try:
            results.put((index, True, fn(item)))
        except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
            results.put((index, False, exc))


def imap_in_pool(fn: Callable, items: Iterable, jobs: int, chunksize: int = 1) -> Iterator:
    """``fn(item)`` for every item, in order, in ``jobs`` worker processes (here when ``jobs <= 1``).

    ``fn`` must be picklable (a module-level function). The workers are spawned
    processes that die with this one (:func:`die_with_parent`) and ignore
    Ctrl-C. Whatever ends the iteration early (an exception here or in ``fn``,
    an interrupt, SIGTERM as :class:`Terminated`, the consumer stopping) kills
    them before it goes on, so none is still working afterwards. At most
    ``2 * jobs`` items are in flight (``chunksize`` is accepted for
    compatibility and ignored).
    """
    items = list(items)
    if jobs <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    jobs = min(jobs, len(items))
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads or locks
    tasks, results = context.SimpleQueue(), context.SimpleQueue()
    workers = [context.Process(target=_worker_loop, args=(os.getpid(), fn, tasks, results), daemon=True)
               for _ in range(jobs)]  # fmt: skip
    # An interrupt while a worker is being started would leave it half-started (it then dies with an
    # EOFError traceback of its own): hold Ctrl-C and SIGTERM until every worker is running.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for worker in workers:
            worker.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        sent, done, pending = 0, 0, {}
        while done < len(items):
            while sent < len(items) and sent - done < 2 * jobs:
                tasks.put((sent, items[sent]))
                sent += 1
            while done not in pending:
                dead = [w.exitcode for w in workers if w.exitcode is not None]
                if dead and results.empty():
                    raise WorkerDied(
                        f"a worker process died (exit status {dead[0]}; out of memory?); run again to resume"
                    )
                if results._reader.poll(0.2):  # noqa: SLF001 - SimpleQueue has no timeout of its own
                    index, ok, value = results.get()
                    if not ok:
                        raise value
                    pending[index] = value
            yield pending.pop(done)
            done += 1
        for _ in workers:
            tasks.put(None)
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        for worker in workers:
            worker.join()
        tasks.close()
        results.close()
