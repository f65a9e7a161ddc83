"""`agevision batch --engine ray`: one task per video on a Ray cluster.

Each worker is an actor holding the model (loaded once), asking for one CPU and, with
--gpus-per-worker, a share of a GPU; videos are handed to free workers and their batch
lines come back as they finish. Without --address a Ray instance is started on this
machine, bound to 127.0.0.1, and stopped at the end. Ray's usage statistics (which it
would send to its makers) are switched off before Ray is imported; no dashboard is
started. The input paths and the output folder must be visible to every node (one
machine, or a shared file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from agevision.errors import AgevisionError

INSTALL = "pip install 'agevision[ray]'"


def require_ray():
    """The ray module, or AgevisionError saying how to install it."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage report to Ray's makers
    try:
        import ray
    except ImportError:
        raise AgevisionError(f"--engine ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


class _Worker:
    """A Ray actor: one model, videos one at a time (`batch.process_video`), frame counts put
    on the `ticks` queue (a `ray.util.queue.Queue`) as they go."""

    def __init__(self, opts, ticks) -> None:
        self.opts, self.ticks = opts, ticks
        self.estimator = None

    def run(self, k: int, video: str, folder: str) -> tuple[int, dict]:
        from agevision.batch import _worker_estimator, process_video, throttled_ticks

        if self.estimator is None:  # one CPU thread, as the actor asks Ray for one CPU
            self.estimator = _worker_estimator(self.opts, one_thread=True)
        progress = throttled_ticks(self.ticks.put_nowait, k)
        return k, process_video(video, folder, self.opts, progress=progress, estimator=self.estimator)


def run_on_ray(todo: list, opts, finish: Callable[[int, dict], None], address: str | None = None,
               workers: int | None = None, gpus_per_worker: float = 0.0,
               frames: Callable[[int, int], None] | None = None) -> None:
    """Run the (k, video, folder) items of `todo` on Ray; `finish(k, line)` as each ends,
    `frames(k, frames done)` while it runs. A worker that dies (a native crash, its node
    lost) fails its video and is replaced; the others go on."""
    if not todo:
        return
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                         logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = address or "this machine"
            raise AgevisionError(f"cannot reach a Ray cluster at {where}: {str(err).splitlines()[0]}") from None
    try:
        resources = ray.cluster_resources()
        if gpus_per_worker > 0 and resources.get("GPU", 0) < gpus_per_worker:
            raise AgevisionError(f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has "
                                 f"{resources.get('GPU', 0):g} GPUs")
        if workers is None:
            by_cpu = int(resources.get("CPU", 1))
            workers = max(1, min(by_cpu, int(resources["GPU"] / gpus_per_worker) if gpus_per_worker else by_cpu))
        _schedule(ray, todo, opts, finish, frames or (lambda k, n: None), min(workers, len(todo)), gpus_per_worker)
    finally:
        if started:
            ray.shutdown()


def _schedule(ray, todo: list, opts, finish, frames, workers: int, gpus_per_worker: float) -> None:
    """Hand the videos of `todo` to `workers` actors, one at a time each, reading the frame
    queue between results."""
    from ray.util.queue import Queue

    from agevision.batch import failed_line

    ticks = Queue(actor_options={"num_cpus": 0})
    actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(_Worker)
    idle = [actor.remote(opts, ticks) for _ in range(workers)]
    pending, running = list(todo), {}

    def read_ticks() -> None:
        waiting = ticks.qsize()
        for k, n in ticks.get_nowait_batch(waiting) if waiting else []:
            frames(k, n)

    while pending or running:
        while idle and pending:
            item = pending.pop(0)
            worker = idle.pop()
            running[worker.run.remote(*item)] = (worker, item)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
        read_ticks()
        for ref in ready:
            worker, (k, video, folder) = running.pop(ref)
            try:
                _, line = ray.get(ref)
            except ray.exceptions.RayError as err:  # the actor died: this video fails, a new one goes on
                reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                line = failed_line(video, folder, f"the Ray worker died: {reason}")
                ray.kill(worker)
                worker = actor.remote(opts, ticks)
            idle.append(worker)
            finish(k, line)
