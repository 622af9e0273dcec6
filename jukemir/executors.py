"""Where work runs: on this machine (default) or across a Ray cluster.

Both executors run the same library functions on the same units of work, so
their outputs are identical; Ray only changes where each unit runs.

* Extraction is sharded by ``--batch_size`` chunks of the ordered file list:
  each Ray actor builds the representation once (on a GPU when the cluster has
  them) and runs :func:`jukemir.representations.folder.run_folder` on the
  chunks it is given.
* Probe grids are sharded over (dataset, representation, stack of configs);
  each task trains its stack with the vectorised trainer and writes its run
  folders.

Every unit is idempotent (finished outputs are skipped, writes are atomic,
outputs are claimed with lock files), so a worker that dies is simply retried
by Ray and nothing is lost or written twice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from .errors import UserError
from .workers import watch_over


class LocalExecutor:
    """Runs every unit in this process, one after another."""

    name = "local"

    def map(self, fn: Callable, items: Sequence) -> list:
        """``[fn(item) for item in items]``."""
        return [fn(item) for item in items]

    def extract(self, representation, input_dir, output_dir, *, batch_size=256, options=None, progress=True):
        """Run the folder runner over the whole folder here; returns its
        :class:`~jukemir.representations.folder.FolderReport`."""
        from .representations.folder import run_folder

        return run_folder(representation, input_dir, output_dir, options=options, progress=progress)


class RayExecutor:
    """Runs units on a Ray cluster (``address=None`` starts a local Ray; ``"auto"`` joins one).

    Args:
        address: passed to ``ray.init``.
        num_cpus: for a local Ray only.
        max_retries: how often a unit whose worker died is retried.
        init_kwargs: anything else for ``ray.init`` (e.g. ``runtime_env``).
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3, **init_kwargs
    ):
        try:
            import ray
        except ImportError:
            raise UserError("the Ray executor needs Ray: pip install 'jukemir[ray]'") from None
        self.ray = ray
        self.max_retries = max_retries
        if not ray.is_initialized():
            kwargs = dict(init_kwargs)
            if address is not None:
                kwargs["address"] = address
            elif num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
            kwargs.setdefault("include_dashboard", False)
            kwargs.setdefault("log_to_driver", True)
            if address is None:  # a local Ray of our own: none of its processes may outlive this one
                watch_over()
            ray.init(**kwargs)

    def _gpus_per_worker(self) -> float:
        return 1.0 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0.0

    def map(self, fn: Callable, items: Sequence) -> list:
        """Run ``fn(item)`` for each item as Ray tasks (retried if a worker dies); results in order."""
        remote = self.ray.remote(max_retries=self.max_retries, retry_exceptions=False)(_apply)
        return self.ray.get([remote.remote(fn, item) for item in items])

    def extract(
        self,
        representation,
        input_dir,
        output_dir,
        *,
        batch_size=256,
        options=None,
        progress=True,
        num_workers: int | None = None,
    ):
        """Shard the folder's ``batch_size`` chunks across Ray actors; returns the merged ``FolderReport``.

        Each actor builds the representation once; chunks are handed out as
        actors become free. A chunk whose actor died is rerun on a restarted
        actor (finished outputs in it are skipped).
        """
        from ray.util import ActorPool

        from .representations import Representation
        from .representations.folder import FolderReport, list_inputs

        name = representation.name if isinstance(representation, Representation) else str(representation)
        summary = FolderReport(name, str(output_dir))
        n_batches = -(-len(list_inputs(input_dir)) // batch_size)
        if n_batches == 0:
            return summary
        if num_workers is None:
            cpus = int(self.ray.cluster_resources().get("CPU", 1))
            gpus = int(self.ray.cluster_resources().get("GPU", 0))
            num_workers = max(1, gpus or cpus)
        num_workers = max(1, min(num_workers, n_batches))
        actor_cls = self.ray.remote(
            num_gpus=self._gpus_per_worker(),
            num_cpus=1,
            max_restarts=self.max_retries,
            max_task_retries=self.max_retries,
        )(_ExtractWorker)
        actors = [
            actor_cls.remote(representation, str(input_dir), str(output_dir), options or {})
            for _ in range(num_workers)
        ]
        pool = ActorPool(actors)
        start = time.time()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n_batches, desc=f"extract {representation} (ray)", unit="batch")
        for report in pool.map_unordered(lambda a, i: a.run.remote(i, batch_size), range(n_batches)):
            summary.merge(report)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        summary.seconds = time.time() - start
        print(f"{summary.summary()} (ray, {num_workers} workers)", file=sys.stderr)
        return summary


def _apply(fn, item):
    return fn(item)


class _ExtractWorker:
    """A Ray actor: the representation is built once, then chunks are run through the folder runner."""

    def __init__(self, representation, input_dir, output_dir, options):
        from .representations import Representation, get_representation

        if isinstance(representation, Representation):
            self.rep = representation
        else:
            self.rep = get_representation(representation, **options)
        self.input_dir, self.output_dir = input_dir, output_dir

    def run(self, batch_idx, batch_size):
        from .representations.folder import run_folder

        return run_folder(
            self.rep,
            self.input_dir,
            self.output_dir,
            batch_size=batch_size,
            batch_idx=batch_idx,
            progress=False,
        )


def get_executor(name: str = "local", address: str | None = None, **kwargs):
    """``"local"`` -> :class:`LocalExecutor`; ``"ray"`` -> :class:`RayExecutor` (``address`` optional)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address, **kwargs)
    raise UserError(f"unknown executor {name!r}; expected 'local' or 'ray'")
