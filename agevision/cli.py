"""The `agevision` command line: train, evaluate (and, next, webcam, video, image, bench).

Every command turns an AgevisionError (bad input, missing files) into one red line on
stderr and exit status 1, and Ctrl-C into exit status 130, never a traceback.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agevision.errors import AgevisionError

app = typer.Typer(
    help="Real-time age and gender estimation from faces in webcam and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
SHARED = Path("../shared")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    console.print(f"[yellow]warning:[/] {message}")


def friendly(func):
    """Run a command body, turning AgevisionError into one error line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        try:
            return func(*args, **kwargs)
        except AgevisionError as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def _root() -> None:
    """Real-time age and gender estimation from faces in webcam and video."""


@app.command()
@friendly
def train(
    data_dir: Annotated[Path, typer.Argument(help="UTKFace folder (labels in file names)")] = SHARED
    / "data/utkface/UTKFace",
    out: Annotated[Path, typer.Option(help="folder to write agegender.safetensors and .json")] = Path("weights"),
    duplicates: Annotated[Path | None, typer.Option(help="duplicate_groups.txt: groups kept on one side")] = SHARED
    / "data/utkface/duplicate_groups.txt",
    imagenet: Annotated[Path | None, typer.Option(help="torchvision mobilenet_v2-b0353104.pth")] = SHARED
    / "pretrained/mobilenet_v2-b0353104.pth",
    no_imagenet: Annotated[bool, typer.Option(help="start from random weights")] = False,
    epochs: Annotated[int, typer.Option(min=1)] = 12,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option(help="peak learning rate (AdamW, cosine decay)")] = 1.5e-3,
    input_size: Annotated[int, typer.Option(help="crop side in pixels")] = 96,
    seed: Annotated[int, typer.Option(help="seed for the split, initialisation and batches")] = 0,
    limit: Annotated[int | None, typer.Option(help="train on a random subset of this many images")] = None,
    cache_dir: Annotated[Path, typer.Option(help="where decoded aligned crops are cached")] = Path(".cache"),
    checkpoint: Annotated[Path, typer.Option(help="checkpoint written after each epoch")] = Path(
        "runs/checkpoint.pt"
    ),
    resume: Annotated[bool, typer.Option(help="continue from --checkpoint if it matches")] = True,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if available)")] = None,
) -> None:
    """Train the age and gender network on UTKFace and write weights plus model card."""
    from agevision.training.train import TrainConfig
    from agevision.training.train import train as run

    if duplicates is not None and not duplicates.is_file():
        raise AgevisionError(f"duplicates file not found: {duplicates}")
    cfg = TrainConfig(
        data_dir=data_dir, out_dir=out, duplicates=duplicates, imagenet=None if no_imagenet else imagenet,
        cache_dir=cache_dir, checkpoint=checkpoint, input_size=input_size, epochs=epochs, batch_size=batch_size,
        lr=lr, seed=seed, limit=limit, device=device, resume=resume,
    )
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
    duplicates: Annotated[Path | None, typer.Option(help="duplicate_groups.txt used by the split")] = SHARED
    / "data/utkface/duplicate_groups.txt",
    cache_dir: Annotated[Path, typer.Option(help="where aligned crops are cached")] = Path(".cache"),
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if available)")] = None,
) -> None:
    """Measure age MAE, CS@5, gender accuracy, calibration and interval coverage on a folder.

    Labels come from UTKFace file names ({age}_{gender}_{race}_...jpg). Faces are cropped
    by the same detector and alignment as in training and in the live pipeline.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from agevision.training.evaluate import evaluate as run
    from agevision.training.evaluate import print_tables, write_predictions, write_report

    if split is not None and duplicates is not None and not duplicates.is_file():
        duplicates = None
    with Progress(TextColumn("detecting faces"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("detect", total=None)
        ev = run(data_dir, weights, cache_dir, device, split, duplicates, progress=lambda n: bar.advance(task, n))
    print_tables(ev, Console())
    if predictions:
        write_predictions(ev, predictions)
        console.print(f"predictions written to {predictions}")
    if report:
        files = write_report(ev, report)
        console.print(f"report: {', '.join(str(f) for f in files)}")


DetectorOpt = Annotated[
    str | None,
    typer.Option(help="face detector: 'short' (faces filling a good part of the frame, faster) or 'full' "
                 "(also finds small, distant faces). Default: short for webcam, full for video and images."),
]
MinFaceOpt = Annotated[int, typer.Option(help="faces narrower than this (pixels) get a box but no age/gender")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if available)")]
WeightsOpt = Annotated[Path | None, typer.Option(help="weights folder (default: the shipped weights/)")]


def _processor(weights: Path | None, device: str | None, detector: str, min_face: int, smooth: bool = True):
    from agevision.model.estimator import Estimator
    from agevision.pipeline import FrameProcessor

    if detector not in ("short", "full"):
        raise AgevisionError(f"--detector must be 'short' or 'full', not {detector!r}")
    return FrameProcessor(Estimator(weights, device), detector=detector, min_face=min_face, smooth=smooth)


def _window(title: str):
    """(show, read_key, close) for an OpenCV window; AgevisionError if there is no display."""
    import cv2

    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise AgevisionError("cannot open a window (no display? set DISPLAY or run without --show)") from None

    def show(frame):
        cv2.imshow(title, frame)

    def close():
        cv2.destroyWindow(title)
        cv2.waitKey(1)

    return show, lambda: cv2.waitKey(1), close


@app.command()
@friendly
def webcam(
    camera: Annotated[int, typer.Option(help="camera index")] = 0,
    width: Annotated[int | None, typer.Option(help="requested capture width")] = None,
    height: Annotated[int | None, typer.Option(help="requested capture height")] = None,
    source: Annotated[Path | None, typer.Option(help="play this video file through the live loop instead")] = None,
    detector: DetectorOpt = None,
    min_face: MinFaceOpt = 24,
    snapshots: Annotated[Path, typer.Option(help="folder for snapshots (key s)")] = Path("."),
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Live camera window with faces boxed and labelled (gender, age ±80% interval) and FPS.

    Keys: o toggles the face overlays, h the HUD, s saves a PNG snapshot, space pauses,
    q or Esc quits.
    """
    from agevision.pipeline import run_live
    from agevision.sources import CameraSource, VideoSource

    src = VideoSource(source) if source is not None else CameraSource(camera, width, height)
    try:
        show, read_key, close = _window("agevision")
        with _processor(weights, device, detector or "short", min_face) as proc:
            try:
                result = run_live(proc, src, show, read_key, snapshot_dir=snapshots)
            finally:
                close()
    finally:
        src.close()
    for p in result["snapshots"]:
        console.print(f"snapshot saved: {p}")


@app.command()
@friendly
def video(
    input: Annotated[Path, typer.Argument(help="video file to annotate")],
    out: Annotated[Path | None, typer.Option(help="annotated H.264 MP4 to write (keeps the audio)")] = None,
    json: Annotated[Path | None, typer.Option("--json", help="JSONL: one record per face per frame")] = None,
    show: Annotated[bool, typer.Option(help="also show the annotated video in a window")] = False,
    detector: DetectorOpt = None,
    min_face: MinFaceOpt = 24,
    raw: Annotated[bool, typer.Option(help="label raw per-frame estimates (no temporal smoothing)")] = False,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Annotate a video file: boxes and labels per face, written to --out and/or --json.

    Ctrl-C stops early; what was written so far stays a playable file.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from agevision.pipeline import run_video
    from agevision.sinks import JsonlWriter, VideoWriter
    from agevision.sources import VideoSource

    if out is None and json is None and not show:
        raise AgevisionError("nothing to do: give --out FILE.mp4, --json FILE.jsonl and/or --show")
    if out is not None and out.suffix.lower() != ".mp4":
        raise AgevisionError(f"--out must end in .mp4, not {out.name}")
    if out is not None and input.exists() and out.resolve() == input.resolve():
        raise AgevisionError("--out would overwrite the input video")
    src = VideoSource(input)
    sinks = []
    try:
        vw = VideoWriter(out, src.width, src.height, src.fps, audio_from=input) if out else None
        sinks.append(vw)
        jw = JsonlWriter(json) if json else None
        sinks.append(jw)
        window = _window("agevision") if show else None
        with _processor(weights, device, detector or "full", min_face, smooth=not raw) as proc:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[fps]} FPS"), TimeRemainingColumn())
            with Progress(*columns, console=console) as bar:
                task = bar.add_task(input.name, total=src.frame_count or None, fps="--")

                def progress(n, fps):
                    bar.update(task, completed=n, fps=f"{fps:.1f}" if fps else "--")

                def show_frame(frame):
                    window[0](frame)
                    return (window[1]() & 0xFF) not in (ord("q"), 27)

                result = run_video(proc, src, float(src.fps), src.frame_count, vw, jw,
                                   show_frame if window else None, progress)
        for sink in sinks:
            if sink is not None:
                sink.close(complete=not result.interrupted) if sink is vw else sink.close()
        sinks.clear()
    finally:
        for sink in sinks:
            if sink is not None:
                sink.discard()
        src.close()
    if result.frames == 0:
        raise AgevisionError(f"{input} has no decodable frames")
    what = ", ".join(str(p) for p in (out, json) if p)
    rate = result.frames / max(result.seconds, 1e-9)
    msg = f"{result.frames} frames, {result.faces} face detections, {rate:.1f} FPS" + (f" -> {what}" if what else "")
    if result.interrupted:
        console.print(f"[yellow]stopped early:[/] {msg}")
        raise typer.Exit(130)
    console.print(msg)


@app.command()
@friendly
def image(
    paths: Annotated[list[Path], typer.Argument(help="image files")],
    out: Annotated[Path | None, typer.Option(help="folder for annotated copies")] = None,
    json: Annotated[Path | None, typer.Option("--json", help="JSONL with one record per face")] = None,
    crops: Annotated[bool, typer.Option(help="each image is already a cropped face: no detection")] = False,
    detector: DetectorOpt = None,
    min_face: MinFaceOpt = 24,
    weights: WeightsOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Estimate age and gender of the faces in still images; print a line per face."""
    from agevision.images import annotate_images

    annotate_images(paths, out, json, crops, detector or "full", min_face, weights, device, Console(soft_wrap=True))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
