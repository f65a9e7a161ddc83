"""One video through the pipeline into its outputs: what `agevision video` does for one
file and `agevision batch` for each of many.

`VideoJob` says what to make (the input, the outputs wanted, the options); `check_job`
refuses bad outputs before any work; `run_job` opens the video (its errors come before
the model loads), runs the frames through a `pipeline.FrameProcessor` into the sinks
(`sinks`), groups the tracks into people and finishes every output, or discards them all
on an error. Returns a `JobResult`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from agevision.defaults import DETECT_EVERY, MIN_FACE, MIN_TRACK, TILE_SIZE
from agevision.errors import AgevisionError


@dataclass
class VideoOptions:
    """How a video is read: the `agevision video` options of the same names (`batch` and
    `serve` take the same ones)."""

    min_track: float = MIN_TRACK
    raw: bool = False
    detector: str = "full"
    min_face: int = MIN_FACE
    detect_every: int = DETECT_EVERY
    tile_size: int = TILE_SIZE


@dataclass
class VideoJob:
    """One video and what to make of it. out: annotated MP4; json: JSONL records;
    summary: people CSV (and thumbnails); save_embeddings: identity vectors (NPZ); show: a
    window; options: how it is read."""

    input: Path
    out: Path | None = None
    json: Path | None = None
    summary: Path | None = None
    save_embeddings: Path | None = None
    show: bool = False
    options: VideoOptions = field(default_factory=VideoOptions)

    @property
    def identify(self) -> bool:
        """Whether tracks are grouped into people (wanted by the records, summary and vectors)."""
        return self.json is not None or self.summary is not None or self.save_embeddings is not None


@dataclass
class JobResult:
    """What `run_job` did: frames processed (of frame_count in the header), face boxes,
    seconds, whether it stopped early or the file ended before its header said, the
    people summary (with --summary) and the track -> person map (with identities)."""

    frames: int
    frame_count: int
    faces: int
    seconds: float
    interrupted: bool
    truncated: bool
    summary: object | None = None
    persons: dict[int, int] | None = field(default=None, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def check_job(job: VideoJob) -> None:
    """AgevisionError, before any work, for outputs that cannot be: none asked for, wrong
    suffixes, two outputs (or an output and the input) that are one file, an unwritable
    target, a window without a display."""
    from agevision.files import check_writable, refuse_same_files
    from agevision.sinks import check_display

    if job.out is None and job.json is None and job.summary is None and job.save_embeddings is None and not job.show:
        raise AgevisionError("nothing to do: give --out FILE.mp4, --json FILE.jsonl, --summary FILE.csv and/or --show")
    for target, suffixes, flag in ((job.out, (".mp4",), "--out"), (job.json, (".jsonl", ".json", ".ndjson"), "--json"),
                                   (job.summary, (".csv",), "--summary"),
                                   (job.save_embeddings, (".npz",), "--save-embeddings")):
        if target is not None and target.suffix.lower() not in suffixes:
            raise AgevisionError(f"{flag} must end in {suffixes[0]}, not {target.name}")
    refuse_same_files({"the input": job.input, "--out": job.out, "--json": job.json, "--summary": job.summary,
                       "--save-embeddings": job.save_embeddings})
    for target in (job.out, job.json, job.summary, job.save_embeddings):
        if target is not None:
            check_writable(target)
    if job.show:
        check_display()


def run_job(job: VideoJob, estimator, progress: Callable[[int, int, float | None], None] | None = None,
            header_extra: dict | None = None) -> JobResult:
    """Run `job` (checked with `check_job`) and write its outputs.

    estimator: a `model.estimator.Estimator`, or a function making one (called once the
    video is open, so that a missing file is said before the model loads). progress:
    called with (frames done, frames in the header, current FPS). header_extra: more
    fields for the records' header. Raises AgevisionError on a video that cannot be read
    (nothing is then left behind); Ctrl-C, SIGTERM and SIGHUP end the run early with every
    output complete (JobResult.interrupted).
    """
    from agevision.pipeline import FrameProcessor, run_video
    from agevision.records import end_record, video_header
    from agevision.sinks import JsonlSink, PeopleSink, VideoSink, WindowSink
    from agevision.sources import VideoSource

    o = job.options
    src = VideoSource(job.input)
    try:
        # the records name the video relative to their own folder, where `report` looks for it
        named = Path(os.path.relpath(job.input.resolve(), job.json.resolve().parent)) if job.json else job.input
        header = video_header(named, src.width, src.height, src.fps, src.frame_count, smoothed=not o.raw,
                              detect_every=o.detect_every, identities=job.identify)
        header.update(header_extra or {})
        if progress is not None:  # the video is open: its bar can show while the model loads
            progress(0, src.frame_count, None)
        with ExitStack() as outputs:
            if callable(estimator):  # the model loads (torch imports) while the detector starts
                from concurrent.futures import ThreadPoolExecutor

                from agevision.detect import FaceDetector

                with ThreadPoolExecutor(1, thread_name_prefix="load-model") as pool:
                    loading = pool.submit(estimator)
                    detector = outputs.enter_context(FaceDetector(o.detector, tile_size=o.tile_size))
                    estimator = loading.result()
            else:
                detector = None
            sinks = []
            if job.out is not None:
                sinks.append(outputs.enter_context(VideoSink(job.out, src.width, src.height, src.fps,
                                                             audio_from=job.input)))
            if job.json is not None:
                sinks.append(outputs.enter_context(JsonlSink(job.json, header)))
            people = outputs.enter_context(PeopleSink(job.summary, header, o.min_track)) if job.summary else None
            if people is not None:
                sinks.append(people)
            if job.show:
                sinks.append(outputs.enter_context(WindowSink("agevision")))
            with FrameProcessor(estimator, detector=o.detector, min_face=o.min_face, smooth=not o.raw,
                                detect_every=o.detect_every, tile_size=o.tile_size,
                                identify=job.identify, face_detector=detector) as proc:
                total = src.frame_count

                def tick(n: int, fps: float | None) -> None:
                    if progress is not None:
                        progress(n, total, fps)

                result = run_video(proc, src, float(src.fps), sinks, tick)
                if result.frames == 0:
                    raise AgevisionError(f"{job.input} has no decodable frames")
                truncated = not result.interrupted and src.ended_early(result.frames)
                end = end_record(result.frames, result.interrupted, truncated)
                persons = proc.people()
                if job.save_embeddings is not None:
                    from agevision.identity import save_vectors

                    save_vectors(job.save_embeddings, proc.identities.track_vectors(), persons)
                for sink in sinks:
                    sink.finish(end, persons)
        return JobResult(frames=result.frames, frame_count=src.frame_count, faces=result.faces,
                         seconds=result.seconds, interrupted=result.interrupted, truncated=truncated,
                         summary=people.summary if people is not None else None, persons=persons)
    finally:
        src.close()
