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

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from .errors import JukemirError

_PR_SET_PDEATHSIG = 1


class WorkerDied(JukemirError):
    """A worker process was killed from outside (e.g. by the out-of-memory killer)."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (raised in the main thread, like Ctrl-C's KeyboardInterrupt)."""


_held = 0  # depth of signals_held() sections in the main thread
_pending: type | None = None  # the interrupt that arrived during one


def _on_stop_signal(signum, frame):
    global _pending
    stop = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    if _held:
        _pending = stop  # honoured when the section ends
        return
    raise stop()


def terminate_like_interrupt() -> None:
    """From now on SIGTERM raises :class:`Terminated` and Ctrl-C ``KeyboardInterrupt`` in the main thread,
    except inside :func:`signals_held` sections, which they wait for (call from the main thread)."""
    signal.signal(signal.SIGTERM, _on_stop_signal)
    signal.signal(signal.SIGINT, _on_stop_signal)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """A few steps that an interrupt must not cut in half (take a lock and record it, say).

    With :func:`terminate_like_interrupt`'s handlers (the ``jukemir`` command
    installs them), Ctrl-C or SIGTERM arriving inside takes effect as soon as
    the outermost section ends. Sections nest; other threads pass through.
    """
    global _held, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending is not None:
            stop, _pending = _pending, None
            raise stop()


def take_into(held: list, item, try_take: Callable[[], bool], wait: bool = False) -> bool:
    """``try_take()`` (one non-blocking attempt at a lock) and, if it succeeds, ``held.append(item)``, as
    one step no interrupt can split, so whoever releases what ``held`` lists releases every lock taken.

    ``wait``: retry every 50 ms until it succeeds (interruptible between attempts). Returns whether it did.
    """
    while True:
        with signals_held():
            if try_take():
                held.append(item)
                return True
        if not wait:
            return False
        time.sleep(0.05)


def die_with_parent(parent_pid: int) -> None:
    """Make this process die when ``parent_pid`` (its parent) does; exit now if it already has.

    Linux only (``prctl``); elsewhere only the check of the parent's pid remains.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _init_worker(parent_pid: int) -> None:
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker_loop(parent_pid: int, fn: Callable, tasks, results) -> None:
    """A worker: run ``fn`` on each ``(index, item)`` from ``tasks`` until ``None``; send
    ``(index, ok, value)``."""
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
    workers = [
        context.Process(target=_worker_loop, args=(os.getpid(), fn, tasks, results), daemon=True)
        for _ in range(jobs)
    ]
    # An interrupt while a worker is being started would leave it half-started (it then dies with an
    # EOFError traceback of its own): Ctrl-C and SIGTERM wait until every worker is running.
    with signals_held():
        for worker in workers:
            worker.start()
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


def descendants(pid: int) -> dict[int, str]:
    """The live descendants of ``pid`` as ``{pid: start time}`` (Linux ``/proc``; ``{}`` elsewhere)."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    kids = [int(k) for k in handle.read().split()]
            except OSError:
                continue
            for kid in kids:
                if kid not in found:
                    found[kid] = _start_time(kid)
                    todo.append(kid)
    return {k: v for k, v in found.items() if v}


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]  # field 22: start time since boot
    except (OSError, IndexError):
        return ""


def watch_over() -> None:
    """Start a watchdog that kills every descendant of this process as soon as this process is gone.

    For helpers this process starts but cannot make die with it (the processes
    of a local Ray cluster: a SIGKILL of the driver leaves some running). The
    watchdog keeps a list of this process's descendants while it lives, then
    kills them (a pid that now belongs to another process, by its start time,
    is left alone) and exits.
    """
    if not sys.platform.startswith("linux"):
        return
    import subprocess

    subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, jukemir.workers as w; w._watchdog(int(sys.argv[1]))",
            str(os.getpid()),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _watchdog(parent: int) -> None:
    import time

    me = os.getpid()
    seen: dict[int, str] = {}
    parent_start = _start_time(parent)
    while os.getppid() == parent and _start_time(parent) == parent_start:
        seen.update((pid, start) for pid, start in descendants(parent).items() if pid != me)
        time.sleep(0.2)
    for pid, start in seen.items():
        if _start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
