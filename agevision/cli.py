"""The `agevision` command line: train, evaluate (and, next, webcam, video, image, bench).

Every command turns an AgevisionError (bad input, missing files) into one red line on
stderr and exit status 1, and Ctrl-C into exit status 130, never a traceback.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agevision.defaults import DETECT_EVERY, DUPLICATES_FILE, IMAGENET_FILE, MIN_FACE, MIN_TRACK, TILE_SIZE, UTKFACE_DIR
from agevision.errors import AgevisionError

app = typer.Typer(
    help="Real-time age and gender estimation from faces in webcam and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(stderr=True, soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from rich.markup import escape

    console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


def friendly(func):
    """Run a command body, turning AgevisionError into one error line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        try:
            return func(*args, **kwargs)
        except AgevisionError as err:
            from rich.markup import escape

            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)  # a path may hold [brackets]
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


class _LateBar:
    """A rich progress bar on the console that shows from its first `update` on, so that an
    error before any work is its one line alone (a bar started and stopped unused leaves an
    empty line). description, columns, transient: as rich's Progress and add_task; fields:
    the task's fields until the first update. A context manager; it stops the bar."""

    def __init__(self, description: str, *columns, transient: bool = False, **fields) -> None:
        from rich.progress import Progress

        self._bar, self._task = Progress(*columns, console=console, transient=transient), None
        self._description, self._fields = description, fields

    def update(self, **changes) -> None:
        """rich's Progress.update of the one task (completed=, total=, advance=, fields)."""
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task(self._description, total=None, **self._fields)
        self._bar.update(self._task, **changes)

    def __enter__(self) -> _LateBar:
        return self

    def __exit__(self, *exc) -> None:
        if self._task is not None:
            self._bar.stop()


def _show_version(value: bool) -> None:
    if value:
        from agevision import __version__

        print(f"agevision {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Real-time age and gender estimation from faces in webcam and video."""


def _check_detector(value: str | None) -> str | None:
    if value is not None and value not in ("short", "full"):
        raise typer.BadParameter(f"{value!r} is not one of 'short', 'full'")
    return value


def _check_device(value: str | None) -> str | None:
    import re

    if value is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r} is not cpu, cuda or cuda:N")
    return value


def _crop_geometry(value: str):
    """The `CropGeometry` that `--crop` names ('tight', 'wide' or a box fraction); BadParameter if none."""
    from agevision.align import TIGHT
    from agevision.model.card import CropGeometry

    named = {"tight": TIGHT, "wide": CropGeometry()}
    try:
        fraction = float(value) if value not in named else None
    except ValueError:
        fraction = 0.0
    if fraction is not None and not 0.3 <= fraction <= 1.5:
        raise typer.BadParameter(f"{value!r} is not 'tight', 'wide' or a box fraction from 0.3 to 1.5")
    return named.get(value) or CropGeometry(fraction, TIGHT.center)


def _check_crop(value: str) -> str:
    _crop_geometry(value)
    return value


DetectorOpt = Annotated[
    str | None,
    typer.Option(callback=_check_detector, metavar="short|full",
                 help="face detector: 'short' (faces filling a good part of the frame, faster) or 'full' "
                 "(also finds small, distant faces). Default: short for webcam, full for video and images."),
]
MinFaceOpt = Annotated[int, typer.Option(min=0, help="faces narrower than this many pixels are boxed with '?' "
                                         "and not read")]
TileOpt = Annotated[int, typer.Option(
    min=0, help="frames larger than this many pixels are also searched in overlapping tiles of about this size, "
    "which finds faces a tenth of the frame wide or smaller (slower on large frames; 0: never)")]
DetectEveryOpt = Annotated[int, typer.Option(
    min=1, help="detect and estimate faces on every n-th frame; in between, boxes follow the faces by optical "
    "flow and labels stay (1: detect on every frame, slower)")]
DeviceOpt = Annotated[str | None, typer.Option(callback=_check_device, metavar="cpu|cuda|cuda:N",
                                               help="where the model runs (default: cuda if available, else cpu)")]
WeightsOpt = Annotated[Path | None, typer.Option(help="weights folder (default: the shipped weights/)")]
BackendOpt = Annotated[str, typer.Option(metavar="auto|onnx|torch", help="what runs the model: onnx (ONNX Runtime, "
                                         "CPU), torch (PyTorch, CPU or GPU) or auto (ONNX Runtime on the CPU when "
                                         "the weights have an ONNX export, else PyTorch)")]


@app.command()
@friendly
def train(
    data_dir: Annotated[Path, typer.Argument(help="UTKFace folder (labels in file names)")] = UTKFACE_DIR,
    out: Annotated[Path, typer.Option(help="folder to write agegender.safetensors and .json into; to ship them, "
                                      "copy them into weights/ on purpose")] = Path("runs/weights"),
    duplicates: Annotated[Path | None, typer.Option(help="duplicate_groups.txt: groups kept on one side")] = (
        DUPLICATES_FILE),
    imagenet: Annotated[Path | None, typer.Option(help="torchvision mobilenet_v2-b0353104.pth")] = IMAGENET_FILE,
    no_imagenet: Annotated[bool, typer.Option("--no-imagenet", help="start from random weights, not ImageNet's")] = (
        False),
    init: Annotated[Path | None, typer.Option(help="start from the weights in this folder (fine-tuning) instead of "
                                               "ImageNet's")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="passes over the training faces")] = 20,
    batch_size: Annotated[int, typer.Option(min=2, help="faces per optimisation step")] = 64,
    lr: Annotated[float, typer.Option(help="peak learning rate (AdamW, cosine decay)")] = 1.5e-3,
    input_size: Annotated[int, typer.Option(help="crop side in pixels")] = 112,
    freeze_blocks: Annotated[int, typer.Option(min=0, help="leading MobileNetV2 blocks kept frozen")] = 4,
    l1_weight: Annotated[float, typer.Option(min=0, help="weight of the L1 loss on the expected age")] = 0.15,
    ema_decay: Annotated[float, typer.Option(min=0, max=0.99999, help="EMA of the weights (0: off); "
                                             "the average is evaluated and shipped")] = 0.999,
    seed: Annotated[int, typer.Option(help="seed for the split, initialisation and batches")] = 0,
    limit: Annotated[int | None, typer.Option(help="train on a random subset of this many images")] = None,
    cache_dir: Annotated[Path, typer.Option(help="where decoded aligned crops are cached")] = Path(".cache"),
    checkpoint: Annotated[Path, typer.Option(help="checkpoint written after each epoch")] = Path(
        "runs/checkpoint.pt"
    ),
    resume: Annotated[bool, typer.Option(help="continue from --checkpoint if it matches")] = True,
    augment: Annotated[str, typer.Option(help="augmentation changed from the defaults, e.g. "
                                         "'noise=0.4,turn=0' (fields of training.augment.AugmentConfig)")] = "",
    balance: Annotated[float | None, typer.Option(min=0, max=1, help="weigh every ethnicity x gender x age-band "
                                                  "group alike in the gender loss (1) or as UTKFace has them (0); "
                                                  "default: training.train.TrainConfig's")] = None,
    turned_boost: Annotated[float | None, typer.Option(min=0, help="draw faces turned away up to 1 + this times "
                                                       "as often; default: TrainConfig's")] = None,
    teacher: Annotated[list[Path] | None, typer.Option(
        metavar="DIR", help="weights folder whose reading of each face (P(female), its second gender network "
        "included) is mixed into the gender target (distillation); repeat it for an ensemble: their mean "
        "reading")] = None,
    teacher_weight: Annotated[float, typer.Option(min=0, max=1, help="share of the teacher's reading in the "
                                                  "gender target")] = 0.5,
    teacher_age_weight: Annotated[float, typer.Option(min=0, max=1, help="share of the teacher's age "
                                                      "distribution in the age target (0: ages from the labels "
                                                      "alone)")] = 0.0,
    age_head_only: Annotated[bool, typer.Option("--age-head-only", help="with --init: retrain only the age rows "
                                                "of the last layer on the frozen network (its gender reading "
                                                "stays as it is); --epochs is then the number of copies of the "
                                                "training faces read")] = False,
    gender_head_only: Annotated[bool, typer.Option("--gender-head-only", help="with --init: retrain only the "
                                                   "gender row of the last layer on the frozen network (its "
                                                   "age reading stays as it is), against the labels and any "
                                                   "--teacher; --epochs is then the number of copies of the "
                                                   "training faces read")] = False,
    keep_gender: Annotated[bool, typer.Option("--keep-gender", help="with --init: each augmented face's gender "
                                              "target is what the --init network reads of it, not its label "
                                              "(fine-tune the age, keep the gender reading)")] = False,
    crop: Annotated[str, typer.Option(
        callback=_check_crop, metavar="tight|wide|F",
        help="where the face sits in its crop: 'tight' (the detector box fills it, as UTKFace's pictures do), "
        "'wide' (the box fills 62% and the rest is UTKFace's edge smeared outwards: weights made before "
        "'tight') or a number: the share of the crop's width the box fills; with --age-head-only or "
        "--gender-head-only, the --init weights' own")] = "tight",
    mirror_fill: Annotated[float, typer.Option(min=0, max=1, help="share of training faces whose crop is filled "
                                               "past the picture's edge by mirroring the picture instead of "
                                               "smearing its edge (matters where the crop is wider than the "
                                               "picture: 'wide')")] = 0.0,
    device: DeviceOpt = None,
) -> None:
    """Train the age and gender network on UTKFace and write weights plus model card."""
    from agevision.files import check_folder_writable
    from agevision.training.augment import changed_config
    from agevision.training.train import TrainConfig
    from agevision.training.train import train as run

    try:
        augment_config = changed_config(augment)
    except ValueError as err:
        raise AgevisionError(f"--augment: {err}") from None

    if duplicates is not None and not duplicates.is_file():
        raise AgevisionError(f"duplicates file not found: {duplicates}")
    for folder, what in ((out, "--out"), (cache_dir, "--cache-dir"), (checkpoint.parent, "--checkpoint")):
        check_folder_writable(folder, what)
    from agevision.model.weights import load_card

    if age_head_only and gender_head_only:
        raise AgevisionError("--age-head-only and --gender-head-only: pass one (a head-only run retrains one part)")
    head_only = "age" if age_head_only else "gender" if gender_head_only else None
    geometry = _crop_geometry(crop)
    teacher = tuple(teacher or ())
    if head_only and init is not None:  # the frozen network reads crops placed as it was trained on them
        geometry = load_card(init).crop
    for folder, what in ((init, "--init"), *((t, "--teacher") for t in teacher)):  # before the crops: at once
        if folder is None:
            continue
        card = load_card(folder)
        if card.input_size != input_size:
            raise AgevisionError(f"{what} {folder}: its weights take {card.input_size} px crops, not --input-size "
                                 f"{input_size}")
        reads_crops = what == "--teacher" or (keep_gender and not head_only)  # a teacher, or the kept gender
        if reads_crops and card.crop != geometry:
            placed = f"--init {init}" if head_only else f"--crop {crop}"
            raise AgevisionError(f"{what} {folder}: its weights read crops placed otherwise than {placed}")
    cfg = TrainConfig(
        data_dir=data_dir, out_dir=out, duplicates=duplicates, imagenet=None if no_imagenet else imagenet,
        cache_dir=cache_dir, checkpoint=checkpoint, input_size=input_size, epochs=epochs, batch_size=batch_size,
        lr=lr, freeze_blocks=freeze_blocks, l1_weight=l1_weight, ema_decay=ema_decay, seed=seed, limit=limit,
        device=device, resume=resume, init=init, augment=augment_config, teacher=teacher,
        teacher_weight=teacher_weight, teacher_age_weight=teacher_age_weight, keep_gender=keep_gender,
        crop=geometry, mirror_fill=mirror_fill,
        **{k: v for k, v in (("balance", balance), ("turned_boost", turned_boost)) if v is not None},
    )
    if head_only:
        from agevision.training.head_refit import check, refit

        check(cfg, head_only)
        card = refit(cfg, console, head_only)
    else:
        card = run(cfg, console)
    m = card["validation_metrics"]
    if m:
        console.print(f"validation: age MAE {m['age_mae']:.2f}, gender accuracy {m['gender_accuracy']:.1%}, "
                      f"gender ECE {m['gender_ece']:.3f}, 80% interval coverage {m['interval_coverage']:.1%}")


@app.command()
@friendly
def evaluate(
    data_dir: Annotated[Path, typer.Argument(help="folder of face images named like UTKFace")],
    predictions: Annotated[Path | None, typer.Option(help="write per-image predictions to this CSV")] = None,
    report: Annotated[Path | None, typer.Option(help="write plots (PNG) into this folder")] = None,
    weights: Annotated[Path | None, typer.Option(help="weights folder (default: the shipped weights/)")] = None,
    split: Annotated[str | None, typer.Option(help="only this part of the training split: train, val, calib")] = None,
    duplicates: Annotated[Path | None, typer.Option(help="duplicate_groups.txt used by the split")] = DUPLICATES_FILE,
    cache_dir: Annotated[Path, typer.Option(help="where aligned crops are cached")] = Path(".cache"),
    device: DeviceOpt = None,
) -> None:
    """Measure age MAE, CS@5, gender accuracy, calibration and interval coverage on a folder.

    Labels come from UTKFace file names ({age}_{gender}_{race}_...jpg). Faces are cropped
    by the same detector and alignment as in training and in the live pipeline.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    from agevision.files import check_folder_writable, check_writable
    from agevision.training.evaluate import evaluate as run
    from agevision.training.evaluate import print_tables, write_predictions, write_report

    if predictions is not None:
        check_writable(predictions)
    if report is not None:
        check_folder_writable(report, "--report")
    check_folder_writable(cache_dir, "--cache-dir")
    if split is not None and duplicates is not None and not duplicates.is_file():
        duplicates = None
    with _LateBar("detect", TextColumn("detecting faces"), BarColumn(), MofNCompleteColumn(), transient=True) as bar:
        ev = run(data_dir, weights, cache_dir, device, split, duplicates, progress=lambda n: bar.update(advance=n))
    print_tables(ev, Console())
    if predictions:
        write_predictions(ev, predictions)
        console.print(f"predictions written to {predictions}")
    if report:
        files = write_report(ev, report)
        console.print(f"report: {', '.join(str(f) for f in files)}")




def _estimator(weights: Path | None, device: str | None, backend: str = "auto"):
    """The model, with the CPU shared with the video threads (`pipeline.share_cpu`)."""
    from agevision.model.estimator import Estimator
    from agevision.pipeline import share_cpu

    estimator = Estimator(weights, device, backend=backend)
    share_cpu(estimator)
    return estimator


def _processor(weights: Path | None, device: str | None, detector: str, min_face: int, smooth: bool = True,
               detect_every: int = 1, tile_size: int = 0, backend: str = "auto"):
    from agevision.pipeline import FrameProcessor

    if detector not in ("short", "full"):
        raise AgevisionError(f"--detector must be 'short' or 'full', not {detector!r}")
    return FrameProcessor(_estimator(weights, device, backend), detector=detector, min_face=min_face, smooth=smooth,
                          detect_every=detect_every, tile_size=tile_size)


@app.command()
@friendly
def webcam(
    camera: Annotated[int, typer.Option(min=0, help="camera index (0: the first camera)")] = 0,
    width: Annotated[int | None, typer.Option(help="requested capture width")] = None,
    height: Annotated[int | None, typer.Option(help="requested capture height")] = None,
    source: Annotated[Path | None, typer.Option(help="play this video file through the live loop instead")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="with --source: as fast as frames can be read, not at the "
                                       "file's own frame rate")] = False,
    detector: DetectorOpt = None,
    min_face: MinFaceOpt = MIN_FACE,
    detect_every: DetectEveryOpt = DETECT_EVERY,
    tile_size: TileOpt = 0,
    snapshots: Annotated[Path, typer.Option(help="folder for snapshots (key s)")] = Path("."),
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = "auto",
) -> None:
    """Live camera window with faces boxed and labelled (gender, age ±80% interval) and FPS.

    Keys: o toggles the face overlays, h the HUD, s saves a PNG snapshot, space pauses,
    q or Esc quits.
    """
    from agevision.pipeline import paced, run_live
    from agevision.sinks import window
    from agevision.sources import CameraSource, VideoSource

    src = VideoSource(source) if source is not None else CameraSource(camera, width, height)
    try:
        show, read_key, close = window("agevision")
        show(_loading_picture())  # until the first frame, instead of a blank window
        read_key()
        with _processor(weights, device, detector or "short", min_face, detect_every=detect_every,
                        tile_size=tile_size, backend=backend) as proc:
            try:
                frames = paced(src, float(src.fps)) if source is not None and not fast else src
                result = run_live(proc, frames, show, read_key, snapshot_dir=snapshots)
            finally:
                close()
    finally:
        src.close()
    for p in result["snapshots"]:
        console.print(f"snapshot saved: {p}")


def _loading_picture():
    """A dark 640x360 picture saying that the model is loading."""
    import cv2
    import numpy as np

    picture = np.full((360, 640, 3), 24, np.uint8)
    cv2.putText(picture, "loading model...", (200, 185), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (230, 230, 230), 2,
                cv2.LINE_AA)
    return picture


@app.command()
@friendly
def video(
    input: Annotated[Path, typer.Argument(help="video file to annotate")],
    out: Annotated[Path | None, typer.Option(help="annotated H.264 MP4 to write (keeps the audio)")] = None,
    json: Annotated[Path | None, typer.Option("--json", help="JSONL: one record per face per frame")] = None,
    summary: Annotated[Path | None, typer.Option(help="CSV: one row per person (their tracks grouped by face "
                                                 "identity), with a thumbnail of their best face in a folder "
                                                 "beside it")] = None,
    min_track: Annotated[float, typer.Option(min=0, help="for --summary: faces the identity model does not find "
                                             "too, seen for less than this many seconds, are left out as likely "
                                             "false detections")] = MIN_TRACK,
    show: Annotated[bool, typer.Option(help="also show the annotated video in a window")] = False,
    detector: DetectorOpt = None,
    min_face: MinFaceOpt = MIN_FACE,
    detect_every: DetectEveryOpt = DETECT_EVERY,
    tile_size: TileOpt = TILE_SIZE,
    raw: Annotated[bool, typer.Option(help="label raw per-frame estimates (no temporal smoothing)")] = False,
    save_embeddings: Annotated[Path | None, typer.Option(help="NPZ: each track's face-identity vector and person "
                                                         "id (identity data: kept in memory only unless "
                                                         "asked for)")] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = "auto",
) -> None:
    """Annotate a video file: boxes and labels per face, written to --out, --json and/or --summary.

    With --json or --summary, tracks that show one person (by face identity, from a few of
    each track's best faces) are one person: the records' `person`, the summary's rows.

    Ctrl-C stops early; what was written so far stays a playable file.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from agevision.videojob import VideoJob, VideoOptions, check_job, run_job

    job = VideoJob(input, out=out, json=json, summary=summary, save_embeddings=save_embeddings, show=show,
                   options=VideoOptions(min_track=min_track, raw=raw, detector=detector or "full", min_face=min_face,
                                        detect_every=detect_every, tile_size=tile_size))
    check_job(job)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[fps]} FPS"), TimeRemainingColumn())
    with _LateBar(input.name, *columns, fps="--") as bar:  # shown once the video is open (run_job's first call)
        result = run_job(job, lambda: _estimator(weights, device, backend), lambda n, total, fps: bar.update(
            completed=n, total=total or None, fps=f"{fps:.1f}" if fps else "--"))
    what = ", ".join(str(p) for p in (out, json, summary, save_embeddings) if p)
    msg = f"{result.frames} frames, {result.faces} face boxes, {result.fps:.1f} FPS" + (f" -> {what}" if what else "")
    if result.summary is not None:
        n = len(result.summary.people)
        msg += f" ({n} {'person' if n == 1 else 'people'}{_unreadable_note(result.summary)})"
    if result.truncated:
        console.print(f"[yellow]warning:[/] {input} ends after {result.frames} of the {result.frame_count} frames "
                      "its header promises (a cut or damaged file); the outputs cover what could be read and the "
                      "records say truncated")
    if result.interrupted:
        console.print(f"[yellow]stopped early:[/] {msg}")
        raise typer.Exit(130)
    console.print(msg)


@app.command()
@friendly
def batch(
    inputs: Annotated[list[Path], typer.Argument(help="videos, folders (searched recursively), glob patterns or "
                                                 ".txt files listing paths", show_default=False)],
    out: Annotated[Path, typer.Option(help="output folder: a folder per video, batch.jsonl, report.html")],
    video: Annotated[bool, typer.Option("--video", help="also write each annotated video")] = False,
    link_people: Annotated[bool, typer.Option(help="one person id across all videos (keeps each video's "
                                              "identity vectors in its folder: identity data)")] = False,
    engine: Annotated[str, typer.Option(metavar="local|ray", help="local: worker processes on this machine; "
                                        "ray: a Ray cluster (pip install 'agevision[ray]')")] = "local",
    workers: Annotated[int | None, typer.Option(min=1, help="workers (local default: one per two cores; ray "
                                                "default: one per CPU the cluster has, or per GPU share)")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start one on this machine, "
                                                "on 127.0.0.1)")] = None,
    gpus_per_worker: Annotated[float, typer.Option(min=0, help="Ray: GPU share each worker asks for (0.25: four "
                                                   "workers a GPU)")] = 0.0,
    detector: DetectorOpt = None,
    min_face: MinFaceOpt = MIN_FACE,
    detect_every: DetectEveryOpt = DETECT_EVERY,
    tile_size: TileOpt = TILE_SIZE,
    min_track: Annotated[float, typer.Option(min=0, help="as in agevision video")] = MIN_TRACK,
    raw: Annotated[bool, typer.Option(help="label raw per-frame estimates (no temporal smoothing)")] = False,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = "auto",
) -> None:
    """Many videos into one folder, each with its records and people; a report over all.

    Per video, in OUT/<name>/: records.jsonl and people.csv (annotated.mp4 with --video); in
    OUT: batch.jsonl, a line per video, and report.html over all. A rerun skips the videos
    already done; a video that fails is recorded and the others go on (exit status 1 if any
    failed). Ctrl-C stops after the videos in progress.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from agevision.batch import BatchOptions, collect_videos, run_batch
    from agevision.videojob import VideoOptions

    if engine not in ("local", "ray"):
        raise AgevisionError(f"--engine must be 'local' or 'ray', not {engine!r}")
    if engine == "ray":
        from agevision.batch_ray import require_ray

        require_ray()
    opts = BatchOptions(video=video, link_people=link_people, weights=str(weights) if weights else None,
                        device=device, backend=backend,
                        options=VideoOptions(min_track=min_track, raw=raw, detector=detector or "full",
                                             min_face=min_face, detect_every=detect_every, tile_size=tile_size))
    n_videos = len(collect_videos(inputs))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        videos_task = bar.add_task("videos", total=n_videos)
        frames_task = bar.add_task("frames", total=None)

        def on_line(line):
            bar.advance(videos_task)
            if line["state"] == "failed":
                bar.console.print(f"[red]failed:[/] {line['video']}: {line['error']}", highlight=False)

        def on_frames(n, total):
            bar.update(frames_task, completed=n, total=total or None)

        result = run_batch(inputs, out, opts, engine=engine, workers=workers, address=address,
                           gpus_per_worker=gpus_per_worker, on_line=on_line, on_frames=on_frames)
    states = {s: sum(line["state"] == s for line in result.lines) for s in ("done", "skipped", "failed")}
    people = sum(line["people"] for line in result.lines)
    console.print(f"{states['done']} done, {states['skipped']} skipped, {states['failed']} failed; {people} people "
                  f"-> {out / 'batch.jsonl'}, {out / 'report.html'}")
    if result.interrupted:
        raise typer.Exit(130)
    if result.failed:
        raise typer.Exit(1)


@app.command()
@friendly
def serve(
    host: Annotated[str, typer.Option(help="address to listen on (off the loopback, --token is required)")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8000,
    token: Annotated[str | None, typer.Option(envvar="AGEVISION_TOKEN", help="bearer token every request must "
                                              "carry (Authorization: Bearer T; env AGEVISION_TOKEN)")] = None,
    data: Annotated[Path, typer.Option(help="folder for video jobs (their files and a SQLite table)")] =
    Path("agevision-serve"),
    max_jobs: Annotated[int, typer.Option(min=1, help="video jobs queued or running at once")] = 4,
    max_video_mb: Annotated[int, typer.Option(min=1, help="largest video upload, MB")] = 500,
    max_video_minutes: Annotated[float, typer.Option(min=0.1, help="longest video, minutes")] = 30.0,
    window_ms: Annotated[float, typer.Option(min=0, help="requests arriving within this many ms are estimated "
                                             "in one batch (0: each alone)")] = 10.0,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = "auto",
) -> None:
    """The HTTP API (/v1, docs at /docs) and a web page with the live camera at /."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from agevision.serve.server import ServerConfig, check_config
        from agevision.serve.server import serve as run_server
    except ImportError:
        raise AgevisionError("agevision serve needs FastAPI and uvicorn: pip install 'agevision[serve]'") from None
    config = ServerConfig(host=host, port=port, token=token, data=data, max_jobs=max_jobs,
                          max_video_bytes=max_video_mb << 20, max_video_seconds=max_video_minutes * 60,
                          window=window_ms / 1000, weights=weights, device=device, backend=backend)
    check_config(config)
    from agevision.files import check_folder_writable

    check_folder_writable(data, "--data")
    console.print(f"agevision serving on http://{host}:{port}/ (API at /v1, docs at /docs); Ctrl-C stops")
    run_server(config)


def _unreadable_note(summary) -> str:
    """', 2 unreadable faces' when a summary counted tracks that could not be read, else ''."""
    n = summary.unreadable
    return f", {n} unreadable face{'s' if n != 1 else ''}" if n else ""


@app.command()
@friendly
def report(
    records: Annotated[Path, typer.Argument(help="JSONL records written by `agevision video --json`")],
    out: Annotated[Path, typer.Option(help="the HTML page to write")] = Path("report.html"),
    video: Annotated[Path | None, typer.Option(help="the video, for thumbnails (default: the path in the "
                                               "records)")] = None,
    min_track: Annotated[float, typer.Option(min=0, help="tracks without a person id seen for less than this "
                                             "many seconds are left out as likely false detections")] = MIN_TRACK,
    csv: Annotated[Path | None, typer.Option(help="also write the people table as CSV")] = None,
) -> None:
    """One self-contained HTML page about the people in a video's records.

    A table with thumbnails, the age histogram by gender, the gender split with its
    uncertainty, people on screen over time. The page embeds its images and opens offline.
    """
    from agevision.people import attach_thumbnails_from_video, summarize_file, write_people_csv
    from agevision.report import write_report

    people = summarize_file(records, min_seconds=min_track)
    if people.people:
        attach_thumbnails_from_video(people, video, records=records)
    write_report(people, out, title=records.name)
    if csv is not None:
        write_people_csv(people, csv)
    n = len(people.people)
    console.print(f"{n} {'person' if n == 1 else 'people'}{_unreadable_note(people)} in {Path(people.video).name} "
                  f"-> {out}"
                  + (f", {csv}" if csv else ""))


@app.command()
@friendly
def image(
    paths: Annotated[list[Path], typer.Argument(help="image files, folders of images, or glob patterns",
                                                show_default=False)],
    out: Annotated[Path | None, typer.Option(help="folder for annotated copies (or, for one image, the copy: "
                                                  "annotated.png / .jpg)")] = None,
    json: Annotated[Path | None, typer.Option("--json", help="JSONL with one record per face")] = None,
    crops: Annotated[bool, typer.Option(help="each image is already a cropped face: no detection")] = False,
    detector: DetectorOpt = None,
    min_face: MinFaceOpt = MIN_FACE,
    tile_size: TileOpt = TILE_SIZE,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = "auto",
) -> None:
    """Estimate age and gender of the faces in still images; print a line per face."""
    from agevision.images import annotate_images

    annotate_images(paths, out, json, crops, detector or "full", min_face, weights, device, Console(soft_wrap=True),
                    tile_size=tile_size, backend=backend)


@app.command()
@friendly
def export(
    target: Annotated[Path, typer.Argument(help="the .onnx file to write (a .onnx.json description beside it)")],
    format: Annotated[str, typer.Option("--format", metavar="onnx", help="export format")] = "onnx",
    opset: Annotated[int, typer.Option(min=13, help="ONNX opset")] = 17,
    weights: WeightsOpt = None,
) -> None:
    """Export the model to ONNX, checked against PyTorch on real face crops.

    Dynamic batch, the card's input size. `--backend onnx` (and the CPU default) runs the
    export found beside the weights as agegender.onnx."""
    from agevision.files import check_writable, refuse_same_files
    from agevision.model import onnx_backend

    if format != "onnx":
        raise AgevisionError(f"--format must be onnx, not {format!r}")
    if target.suffix.lower() != ".onnx":
        raise AgevisionError(f"the export must end in .onnx, not {target.name}")
    refuse_same_files({"the export": target, "its description": onnx_backend.sidecar(target)})
    check_writable(target)
    crops, where = _check_crops(weights)
    about = onnx_backend.export(weights, target, crops, opset=opset)
    console.print(f"{target}: opset {about['opset']}, {about['input_size']} px crops, dynamic batch; largest "
                  f"difference from PyTorch on {about['checked_on']} {where}: {about['max_abs_diff']:.2e}")


def _check_crops(weights: Path | None):
    """(N, S, S, 3) uint8 RGB crops to check an export on, and what they are: 32 UTKFace
    faces when ../shared is there, else random pixels."""
    import numpy as np

    from agevision.defaults import UTKFACE_DIR
    from agevision.model import weights as weights_files

    card = weights_files.load_card(weights)
    size = card.input_size
    files = sorted(UTKFACE_DIR.glob("*.jpg"))[:32] if UTKFACE_DIR.is_dir() else []
    if files:
        from agevision.align import align_crops
        from agevision.images import crop_face, read_bgr

        crops = [align_crops(img, crop_face(img), size, geometry=card.crop)[0] for img in (read_bgr(f) for f in files)]
        return np.stack(crops), "UTKFace face crops"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, size, size, 3), dtype=np.uint8), "random crops (no UTKFace here)"


def main() -> None:
    """The `agevision` command: the typer app, with usage errors (a bad option value, an
    unknown option, a missing argument) as one `error:` line and exit status 2."""
    import sys

    try:  # typer 0.2x+ carries its own click
        from typer._click import exceptions as errors
    except ImportError:  # older typer: click itself
        from click import exceptions as errors

    try:
        code = app(standalone_mode=False)
    except getattr(errors, "NoArgsIsHelpError", ()) as err:
        print(err.ctx.get_help() if err.ctx else str(err))
        code = 0
    except errors.ClickException as err:
        hint = f" (see {err.ctx.command_path} --help)" if getattr(err, "ctx", None) else ""
        console.print(f"[bold red]error:[/] {err.format_message()}{hint}", highlight=False, markup=True)
        code = err.exit_code
    except typer.Abort:
        console.print("[yellow]interrupted[/]")
        code = 130
    code = code if isinstance(code, int) else 0
    # every output is complete and closed by now: skip the interpreter's teardown of torch,
    # OpenCV and MediaPipe, which takes a second or more and adds nothing
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
