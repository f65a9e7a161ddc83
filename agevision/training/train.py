"""`agevision train`: fine-tune AgeGenderNet on UTKFace crops, calibrate, write weights/.

Crops come from `training.crops` (the live crop path), cached on disk. Training runs on
whole batches of cached crops with tensor augmentation, checkpoints after every epoch
(resumable), then fits calibration temperatures on the held-out "calib" part, measures
the "val" part and writes the safetensors weights and their card.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.decode import decode
from agevision.model.estimator import pick_device
from agevision.model.net import ARCHITECTURE, NUM_AGE_BINS, AgeGenderNet, split_logits
from agevision.training import calibration, metrics
from agevision.training.augment import AugmentConfig, augment
from agevision.training.crops import cached_crops, cached_geometry
from agevision.training.losses import loss_terms
from agevision.training.utkface import load_folder, read_duplicate_groups, split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_FILE = "mobilenet_v2-b0353104.pth"


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in the model card. The defaults are the
    recipe of the shipped weights, and those of `agevision train`.

    balance: each training face is drawn with weight (1 / size of its ethnicity x gender x
    age-band group) ** balance (0: as UTKFace has them, 1: every group alike).
    turned_boost: faces turned away (by their keypoints) are drawn up to 1 + this times as
    often as frontal ones. augment: what the faces go through (see `AugmentConfig`).
    calib_augmented: the calibration temperatures are fitted on the calib faces as they are
    plus this many augmented copies, so that P(female) and the age interval hold for faces
    as the wild shows them, not only for UTKFace's.
    """

    data_dir: Path
    out_dir: Path = weights.DEFAULT_DIR
    duplicates: Path | None = None
    imagenet: Path | None = None
    cache_dir: Path = Path(".cache")
    checkpoint: Path = Path("runs/checkpoint.pt")
    input_size: int = 112
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 1e-4
    freeze_blocks: int = 4
    l1_weight: float = 0.15
    ema_decay: float = 0.999
    seed: int = 0
    limit: int | None = None
    device: str | None = None
    resume: bool = True
    detector: str = "full"
    balance: float = 0.5
    turned_boost: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    calib_augmented: int = 2
    history: list = field(default_factory=list)


def imagenet_features(path: Path) -> dict[str, torch.Tensor]:
    """MobileNetV2 ImageNet weights through torchvision's weights API, offline.

    `path` is torchvision's own mobilenet_v2-b0353104.pth; it is placed in a temporary
    TORCH_HOME so that `MobileNet_V2_Weights.IMAGENET1K_V1` finds it without a download.
    """
    from torchvision.models import MobileNet_V2_Weights

    path = Path(path)
    if not path.is_file():
        raise AgevisionError(f"ImageNet weights not found: {path} (pass --imagenet PATH or --no-imagenet)")
    old = os.environ.get("TORCH_HOME")
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "hub" / "checkpoints").mkdir(parents=True)
        os.symlink(path.resolve(), Path(home) / "hub" / "checkpoints" / IMAGENET_FILE)
        os.environ["TORCH_HOME"] = home
        try:
            state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        finally:
            if old is None:
                os.environ.pop("TORCH_HOME", None)
            else:
                os.environ["TORCH_HOME"] = old
    return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}


def _to_batch(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def predict_logits(model: AgeGenderNet, crops: np.ndarray, device: torch.device, batch: int = 256):
    """Raw (age logits, gender logit) numpy arrays for uint8 RGB crops, in eval mode."""
    model.eval()
    ages, genders = [], []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            a, g = split_logits(model(_normalise(_to_batch(crops[i : i + batch], device))).float())
            ages.append(a.cpu().numpy())
            genders.append(g.cpu().numpy())
    return np.concatenate(ages), np.concatenate(genders)


class _Data:
    """Crops and labels of one split part as numpy arrays."""

    def __init__(self, samples, crops_by_name):
        keep = [s for s in samples if s.path.name in crops_by_name]
        self.names = [s.path.name for s in keep]
        self.crops = np.stack([crops_by_name[n] for n in self.names]) if keep else np.zeros((0,))
        self.ages = np.array([s.age for s in keep], np.int64)
        self.genders = np.array([s.gender for s in keep], np.int64)
        self.races = np.array([s.race for s in keep], np.int64)


def _set_trainable(model: AgeGenderNet, freeze_blocks: int) -> None:
    model.train()
    for i, block in enumerate(model.features):
        frozen = i < freeze_blocks
        for p in block.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            block.eval()


def train(cfg: TrainConfig, console=None) -> dict:
    """Run a full training as configured; returns the model card that was written.

    Raises AgevisionError on unusable data. Progress goes to `console` (a rich Console).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    started = time.time()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)

    samples = load_folder(cfg.data_dir)
    if cfg.limit:
        rng = np.random.default_rng(cfg.seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), min(cfg.limit, len(samples)), replace=False))]
    parts = split(samples, read_duplicate_groups(cfg.duplicates), seed=cfg.seed)
    console.print(f"UTKFace: {len(samples)} images; split " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))

    with Progress(TextColumn("crops"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("crops", total=len(samples))
        crop_set = cached_crops([s.path for s in samples], cfg.input_size, cfg.cache_dir, cfg.detector,
                                progress=lambda n: bar.advance(task, n))
    readable = [s for s, ok in zip(samples, crop_set.readable, strict=True) if ok]
    crops_by_name = {s.path.name: c for s, c in zip(readable, crop_set.crops, strict=True)}
    no_face = int((~crop_set.found).sum())
    console.print(f"crops: {len(readable)} readable, face found in {len(readable) - no_face}, "
                  f"fallback crop for {no_face}, unreadable {len(samples) - len(readable)}")
    train_d, val_d, calib_d = (_Data(parts[k], crops_by_name) for k in ("train", "val", "calib"))
    if len(train_d.names) == 0:
        raise AgevisionError("no training images left after the split")
    turned = _turned(cached_geometry([s.path for s in samples], cfg.cache_dir, cfg.detector),
                     samples, train_d.names)
    draw_weights = sample_weights(train_d.ages, train_d.genders, train_d.races, turned, cfg.balance, cfg.turned_boost)

    model = AgeGenderNet().to(device)
    if cfg.imagenet is not None:
        model.features.load_state_dict(imagenet_features(cfg.imagenet), strict=True)
    model = model.to(memory_format=torch.channels_last)
    _set_trainable(model, cfg.freeze_blocks)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_d.names) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(steps_per_epoch, total_steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup))) * 0.99 + 0.01

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    ema = _Ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    start_epoch, history = 0, []
    if cfg.resume and cfg.checkpoint.is_file():
        ckpt = torch.load(cfg.checkpoint, map_location=device, weights_only=True)
        if ckpt.get("config_key") == _config_key(cfg, len(samples)):
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if ema is not None and "ema" in ckpt:
                ema.model.load_state_dict(ckpt["ema"])
                ema.updates = int(ckpt.get("ema_updates", 0))
            start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
            console.print(f"resuming from {cfg.checkpoint} after epoch {start_epoch}")
        else:
            console.print(f"[yellow]checkpoint {cfg.checkpoint} is from another configuration; starting afresh")

    bins = torch.arange(NUM_AGE_BINS, dtype=torch.float32, device=device)
    gen = torch.Generator().manual_seed(cfg.seed)
    columns = (TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}  {task.fields[val]}"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        for epoch in range(start_epoch, cfg.epochs):
            gen.manual_seed(cfg.seed * 1000 + epoch)
            order = torch.multinomial(draw_weights, len(train_d.names), replacement=True, generator=gen).numpy()
            task = bar.add_task("train", total=steps_per_epoch, epoch=f"{epoch + 1}/{cfg.epochs}", loss=0.0, val="")
            _set_trainable(model, cfg.freeze_blocks)
            running = []
            for b in range(steps_per_epoch):
                idx = np.sort(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
                x = _normalise(augment(_to_batch(train_d.crops[idx], device), gen, cfg.augment))
                ages = torch.from_numpy(train_d.ages[idx]).to(device)
                genders = torch.from_numpy(train_d.genders[idx]).to(device)
                age_logits, gender_logit = split_logits(model(x).float())
                loss = loss_terms(age_logits, gender_logit, ages, genders, bins, cfg.l1_weight)["total"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update(model)
                running.append(loss.item())
                bar.update(task, advance=1, loss=float(np.mean(running[-50:])))
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(running))}
            if len(val_d.names):
                a, g = predict_logits(ema.model if ema else model, val_d.crops, device)
                s = metrics.summary(val_d.ages, val_d.genders, *decode(a, g).as_tuple())
                row.update(val_mae=s["age_mae"], val_gender_acc=s["gender_accuracy"])
                bar.update(task, val=f"val MAE {s['age_mae']:.2f}  gender {s['gender_accuracy']:.1%}")
            history.append(row)
            cfg.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = cfg.checkpoint.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                        "config_key": _config_key(cfg, len(samples)),
                        **({"ema": ema.model.state_dict(), "ema_updates": ema.updates} if ema else {})}, tmp)
            tmp.replace(cfg.checkpoint)

    if ema is not None:
        model = ema.model
    model.eval()
    calib_src = calib_d if len(calib_d.names) else val_d
    a, g = _calibration_logits(model, calib_src, cfg, device)
    reps = 1 + cfg.calib_augmented
    age_t, gender_t = calibration.fit(a, g, np.tile(calib_src.ages, reps), np.tile(calib_src.genders, reps))
    val_metrics = {}
    if len(val_d.names):
        a, g = predict_logits(model, val_d.crops, device)
        val_metrics = metrics.summary(val_d.ages, val_d.genders, *decode(a, g, age_t, gender_t).as_tuple())
    config = _config_dict(cfg)
    card = {
        "architecture": ARCHITECTURE,
        "input_size": cfg.input_size,
        "input_format": "RGB uint8 crops from agevision.align.align_crops, scaled to [0,1] then normalised",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "age_bins": list(range(NUM_AGE_BINS)),
        "age_temperature": age_t,
        "gender_temperature": gender_t,
        "outputs": "101 age-bin logits (ages 0..100) then 1 gender logit (sigmoid = P(female))",
        "init": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1" if cfg.imagenet else "random",
        "training_data": {
            "dataset": "UTKFace (aligned & cropped), labels from file names",
            "images": len(samples), "train": len(train_d.names), "val": len(val_d.names),
            "calib": len(calib_d.names), "split_seed": cfg.seed,
            "split": "stratified by 5-year age band; duplicate groups kept on one side",
            "fallback_crops": no_face,
        },
        "validation_metrics": val_metrics,
        "history": history,
        "config": config,
        "training_seconds": round(time.time() - started),
        "device": str(device),
        "command": " ".join(["agevision", *sys.argv[1:]]) if sys.argv else "",
    }
    weights.save(model, card, cfg.out_dir)
    console.print(f"weights written to {cfg.out_dir}")
    return card


def _config_dict(cfg: TrainConfig) -> dict:
    """The config as JSON-ready values (paths as strings), without the run's history."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "history"}


# fields that say where things go or how to run, not what is trained
_RUN_ONLY = ("out_dir", "cache_dir", "checkpoint", "device", "resume")


def _config_key(cfg: TrainConfig, n: int) -> str:
    """A key for resuming: every field that changes the training (the recipe, augmentation
    included), plus the number of images; a checkpoint made under another key is not resumed."""
    import hashlib
    import json

    recipe = {k: v for k, v in _config_dict(cfg).items() if k not in _RUN_ONLY}
    return hashlib.sha256(json.dumps({"recipe": recipe, "images": n}, sort_keys=True).encode()).hexdigest()[:24]


def sample_weights(ages: np.ndarray, genders: np.ndarray, races: np.ndarray, turned: np.ndarray,
                   balance: float, turned_boost: float) -> torch.Tensor:
    """How often each training face is drawn (see `TrainConfig`): (N,) float64 tensor, mean 1.

    Groups: ethnicity (unknown counts as its own) x gender x age band (0-12, 13-20, 21-40,
    41-60, 61+). turned: (N,) in [0, 1], 0 frontal, 1 in profile.
    """
    band = np.digitize(ages, [13, 21, 41, 61])
    group = (races + 1) * 100 + genders * 10 + band
    _, inverse, counts = np.unique(group, return_inverse=True, return_counts=True)
    w = (1.0 / counts[inverse]) ** balance * (1 + turned_boost * np.clip(turned, 0, 1))
    return torch.from_numpy(w / w.mean())


def _turned(geoms: list, samples: list, names: list[str]) -> np.ndarray:
    """(len(names),) how far each named face is turned away, 1 - frontalness from its keypoints
    (0 where no face was detected)."""
    from agevision.faces import Faces
    from agevision.quality import frontalness

    by_name = {s.path.name: g for s, g in zip(samples, geoms, strict=True)}
    out = np.zeros(len(names))
    for i, name in enumerate(names):
        g = by_name.get(name)
        if isinstance(g, np.ndarray):
            kps = g[4:].reshape(1, 6, 2).astype(np.float32)
            out[i] = 1 - float(frontalness(Faces(boxes=np.zeros((1, 4), np.float32), keypoints=kps,
                                                 scores=np.ones(1, np.float32)))[0])
    return out


def _calibration_logits(model: AgeGenderNet, data: _Data, cfg: TrainConfig, device: torch.device):
    """Logits of the calibration faces as they are and `cfg.calib_augmented` augmented copies
    (fixed seed), concatenated in that order."""
    ages, genders = [], []
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    for rep in range(1 + cfg.calib_augmented):
        crops = data.crops
        if rep:
            batches = []
            for i in range(0, len(crops), 256):
                x = augment(_to_batch(crops[i : i + 256], torch.device("cpu")), gen, cfg.augment)
                batches.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
            crops = np.concatenate(batches)
        a, g = predict_logits(model, crops, device)
        ages.append(a)
        genders.append(g)
    return np.concatenate(ages), np.concatenate(genders)


class _Ema:
    """Exponential moving average of a model's weights (and batch-norm buffers).

    Evaluated and shipped instead of the raw weights: it averages out the step-to-step
    noise that otherwise moves the validation MAE by several tenths between epochs.
    """

    def __init__(self, model: AgeGenderNet, decay: float) -> None:
        import copy

        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: AgeGenderNet) -> None:
        """Move the average towards `model`'s current weights; integer buffers are copied.

        The decay ramps up over the first steps ((1 + n) / (10 + n)), so that the average
        does not stay anchored to the initial weights in short runs.
        """
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, cur in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.mul_(decay).add_(cur.detach(), alpha=1 - decay)
            else:
                avg.copy_(cur)
