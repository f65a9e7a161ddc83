"""`agevision batch`: many videos, each through `videojob.run_job`, into one output folder.

In: inputs (files, folders searched recursively by video suffix, glob patterns, or text
files listing paths) and a `BatchOptions`. Out, in the output folder: `<name>/` per video
(records.jsonl and people.csv, annotated.mp4 with --video, vectors.npz with
--link-people, and done.json, written last, that marks the video complete), `batch.jsonl`
(one line per video: video, name, state done / failed / skipped, frames, people, seconds,
error), `report.html` over all videos, and with --link-people `people.csv` (every person
of every video with one id across videos).

A rerun skips videos whose done.json and outputs are there; every output is written to a
temporary name and renamed, so a killed run never leaves a half file that looks complete.
A video that fails is recorded with its error and the others go on. Engines: in this
process (one worker), a local process pool (each worker loads the model once), or Ray
(`batch_ray`).
"""

from __future__ import annotations

import glob
import json
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agevision.errors import AgevisionError
from agevision.videojob import VideoOptions

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
LIST_SUFFIXES = (".txt", ".list")
DONE = "done.json"


@dataclass
class BatchOptions:
    """What to make of each video. video: also the annotated MP4. link_people: also each
    video's identity vectors, and one person id over all videos. options: how each is read.
    weights, device, backend: the model's."""

    video: bool = False
    link_people: bool = False
    options: VideoOptions = field(default_factory=VideoOptions)
    weights: str | None = None
    device: str | None = None
    backend: str = "auto"


def collect_videos(inputs: Iterable[Path]) -> list[Path]:
    """The videos named by `inputs`, in order, each once (by resolved path).

    A file with a video suffix is itself; a .txt / .list file lists paths, one a line
    (relative to its own folder; blank lines and lines starting with # skipped); a folder
    gives every video under it (sorted); anything else is a glob pattern. A listed path that
    is missing stays in (its run fails and says so); an input that names nothing raises
    AgevisionError.
    """
    out: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found = _listed(path)
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(raw), recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise AgevisionError(f"no such video, folder or list: {raw}")
        out.extend(found)
    seen, unique = set(), []
    for p in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if not unique:
        raise AgevisionError(f"no videos in {', '.join(str(p) for p in inputs)}")
    return unique


def _listed(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AgevisionError(f"cannot read the list {path}: {err}") from None
    found = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            found.append(p if p.is_absolute() else path.parent / p)
    return found


def output_names(videos: list[Path]) -> list[str]:
    """A folder name per video: its file name without the suffix, made unique by -2, -3...
    in input order (the same inputs give the same names, so a rerun finds its work)."""
    names, taken = [], set()
    for v in videos:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in v.stem).strip(".") or "video"
        name, k = stem, 1
        while name.lower() in taken:
            k += 1
            name = f"{stem}-{k}"
        taken.add(name.lower())
        names.append(name)
    return names


def job_for(video: Path, folder: Path, opts: BatchOptions):
    """The `videojob.VideoJob` of one video of the batch, its outputs in `folder`."""
    from agevision.videojob import VideoJob

    return VideoJob(video, out=folder / "annotated.mp4" if opts.video else None, json=folder / "records.jsonl",
                    summary=folder / "people.csv", save_embeddings=folder / "vectors.npz" if opts.link_people else None,
                    options=opts.options)


def finished(folder: Path, opts: BatchOptions) -> dict | None:
    """The batch line of a video already done in `folder` with these outputs, or None."""
    try:
        line = json.loads((folder / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    job = job_for(Path(line.get("video", "")), folder, opts)
    wanted = [p for p in (job.out, job.json, job.summary, job.save_embeddings) if p is not None]
    if not isinstance(line, dict) or not all(p.is_file() for p in wanted):
        return None
    return line


_ESTIMATOR = None  # one model per worker process, loaded by its first video
_IN_POOL = False  # set in the local engine's worker processes (_init_worker)


def _worker_estimator(opts: BatchOptions, one_thread: bool | None = None):
    """This process's model, made once. one_thread: run it on one CPU thread (a worker beside
    others: a pool process or a Ray actor); default: when this is a pool process."""
    global _ESTIMATOR
    if _ESTIMATOR is None:
        from agevision.model.estimator import Estimator

        _ESTIMATOR = Estimator(Path(opts.weights) if opts.weights else None, opts.device, backend=opts.backend)
        if _IN_POOL if one_thread is None else one_thread:
            _ESTIMATOR.set_threads(1)
    return _ESTIMATOR


def failed_line(video: str, folder: str, error: str | None) -> dict:
    """The batch line of a video that failed with `error` (None: not yet known)."""
    return {"video": video, "name": Path(folder).name, "state": "failed", "frames": 0, "people": 0, "seconds": 0.0,
            "error": error}


def process_video(video: str, folder: str, opts: BatchOptions,
                  progress: Callable[[int, int], None] | None = None, estimator=None) -> dict:
    """One video of the batch: its outputs into `folder`, done.json last. Returns its batch
    line; never raises for a bad video (the line says failed, with the error)."""
    from agevision.files import remove_partials, write_atomic
    from agevision.videojob import check_job, run_job

    video_p, folder_p = Path(video), Path(folder)
    line = failed_line(video, folder, None)
    t0 = time.perf_counter()
    try:
        folder_p.mkdir(parents=True, exist_ok=True)
        (folder_p / DONE).unlink(missing_ok=True)
        remove_partials(folder_p)  # what a killed run of this video left
        job = job_for(video_p, folder_p, opts)
        check_job(job)
        result = run_job(job, estimator if estimator is not None else (lambda: _worker_estimator(opts)),
                         (lambda n, total, fps: progress(n, total)) if progress is not None else None)
        line.update(frames=result.frames, people=len(result.summary.people) if result.summary else 0)
        if result.interrupted:
            line["error"] = "interrupted"
        else:
            line["state"] = "done"
            if result.truncated:
                line["error"] = f"truncated: {result.frames} of {result.frame_count} frames"
    except AgevisionError as err:
        line["error"] = str(err)
    except OSError as err:
        line["error"] = f"{err.strerror or err}"
    except Exception as err:  # noqa: BLE001 - one video's bug must not end the batch; its line says what
        line["error"] = f"{type(err).__name__}: {err} ({traceback.extract_tb(err.__traceback__)[-1].name})"
    line["seconds"] = round(time.perf_counter() - t0, 2)
    if line["state"] == "done":
        write_atomic(folder_p / DONE, json.dumps(line))
    elif folder_p.is_dir() and not any(folder_p.iterdir()):
        folder_p.rmdir()  # nothing was made: no empty folder left that looks like a result
    return line


@dataclass
class BatchResult:
    """The batch lines (input order), where they were written, and whether it was stopped."""

    lines: list[dict]
    interrupted: bool

    @property
    def failed(self) -> int:
        return sum(line["state"] == "failed" for line in self.lines)


def write_lines(target: Path, lines: Iterable[dict]) -> None:
    """batch.jsonl, whole, through a temporary file."""
    from agevision.files import write_atomic

    write_atomic(target, "".join(json.dumps(line) + "\n" for line in lines))


def run_batch(inputs: list[Path], out_dir: Path, opts: BatchOptions, engine: str = "local", workers: int | None = None,
              address: str | None = None, gpus_per_worker: float = 0.0,
              on_line: Callable[[dict], None] | None = None,
              on_frames: Callable[[int, int], None] | None = None) -> BatchResult:
    """Run every video of `inputs` (see module doc). on_line: called with each video's
    batch line as it finishes (skipped ones first); on_frames: with (frames done, frames in
    all) as they go. Raises AgevisionError for inputs that name nothing or an unwritable
    output folder."""
    from agevision.files import check_folder_writable
    from agevision.sources import probe_frames

    videos = collect_videos(inputs)
    if out_dir.exists() and not out_dir.is_dir():
        raise AgevisionError(f"--out {out_dir} is a file, not a folder")
    check_folder_writable(out_dir, "--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(videos)
    lines: dict[int, dict] = {}
    todo = []
    for k, (video, name) in enumerate(zip(videos, names, strict=True)):
        done = finished(out_dir / name, opts)
        if done is not None and os.path.realpath(done.get("video", "")) == os.path.realpath(video):
            lines[k] = {**done, "state": "skipped"}
            if on_line:
                on_line(lines[k])
        else:
            todo.append((k, str(video), str(out_dir / name)))
    totals = {k: probe_frames(Path(v)) for k, v, _ in todo}
    frames_total = sum(totals.values())
    done_frames: dict[int, int] = {}

    def frames(k: int, n: int) -> None:
        done_frames[k] = n
        if on_frames:
            on_frames(sum(done_frames.values()), frames_total)

    def finish(k: int, line: dict) -> None:
        lines[k] = line
        # a video that is over counts all its frames (the bar ends full); one that was stopped, what it did
        frames(k, line["frames"] if line.get("error") == "interrupted" else totals.get(k, 0))
        write_lines(out_dir / "batch.jsonl", (lines[i] for i in sorted(lines)))
        if on_line:
            on_line(line)

    interrupted = False
    try:
        if engine == "ray":
            from agevision.batch_ray import run_on_ray

            run_on_ray(todo, opts, finish, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                       frames=frames)
        elif engine == "local":
            _run_local(todo, opts, finish, frames, workers or default_workers())
        else:
            raise AgevisionError(f"--engine must be 'local' or 'ray', not {engine!r}")
    except KeyboardInterrupt:
        interrupted = True
    interrupted = interrupted or any(line.get("error") == "interrupted" for line in lines.values())
    result = BatchResult([lines[i] for i in sorted(lines)], interrupted)
    write_lines(out_dir / "batch.jsonl", result.lines)
    if opts.link_people:
        from agevision.batch_report import link_people

        link_people(out_dir, result.lines)
    from agevision.batch_report import write_batch_report

    write_batch_report(out_dir, result.lines)
    return result


def default_workers() -> int:
    """Local workers: one per two cores (each runs a model thread beside decode, detect and
    encode threads), at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


def _run_local(todo: list, opts: BatchOptions, finish: Callable[[int, dict], None],
               frames: Callable[[int, int], None], workers: int) -> None:
    """One worker: in this process. More: a pool of spawned processes, each loading the model
    once; frame counts come back through a queue."""
    if workers <= 1 or len(todo) <= 1:
        from agevision.pipeline import share_cpu

        estimator = None
        for k, video, folder in todo:
            if estimator is None:
                estimator = _worker_estimator(opts)
                share_cpu(estimator)
            line = process_video(video, folder, opts, progress=lambda n, total, k=k: frames(k, n),
                                 estimator=estimator)
            finish(k, line)
            if line.get("error") == "interrupted":
                return
        return
    import multiprocessing as mp
    import queue
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        ticks = manager.Queue()
        pending = list(todo)
        while pending:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
                futures = {pool.submit(_pool_video, video, folder, opts, ticks, k): (k, video, folder)
                           for k, video, folder in pending}
                pending = []
                running = set(futures)
                while running:
                    try:
                        finished_now, running = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                    except KeyboardInterrupt:  # the workers stop their videos themselves (same signal)
                        pool.shutdown(wait=True, cancel_futures=True)
                        for f in running:
                            if f.done() and not f.cancelled() and f.exception() is None:
                                finish(futures[f][0], f.result())
                        raise
                    while True:
                        try:
                            k, n = ticks.get_nowait()
                        except queue.Empty:
                            break
                        frames(k, n)
                    for f in finished_now:
                        k, video, folder = futures[f]
                        try:
                            finish(k, f.result())
                        except BrokenProcessPool:  # a worker died (a native crash): this video fails, the rest go on
                            pending = [futures[g] for g in running]
                            finish(k, failed_line(video, folder, "the worker process died"))
                            running = set()
                            break


def _init_worker() -> None:
    """A pool process: its model will run on one thread (the pool has a process per core).
    Nothing is imported here: on the CPU path torch never is."""
    global _IN_POOL
    _IN_POOL = True


def throttled_ticks(put: Callable[[tuple[int, int]], None], k: int, every: float = 0.5) -> Callable[[int, int], None]:
    """A `process_video` progress callback for video `k` of a batch run elsewhere (a pool
    process, a Ray actor): `put((k, frames done))` at most once per `every` seconds, and on
    the first call (`run_job` makes it with 0 frames once the video is open)."""
    last = [float("-inf")]

    def progress(n: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > every:
            last[0] = now
            put((k, n))

    return progress


def _pool_video(video: str, folder: str, opts: BatchOptions, ticks, k: int) -> dict:
    return process_video(video, folder, opts, throttled_ticks(ticks.put, k))
