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
console = Console(stderr=True)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
