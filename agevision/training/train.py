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
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from agevision.align import TIGHT
from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.card import CropGeometry, Denoise, ModelCard
from agevision.model.decode import decode
from agevision.model.denoise import denoise
from agevision.model.gender_ensemble import ensemble_p_female
from agevision.model.net import NUM_AGE_BINS, AgeGenderNet, split_logits
from agevision.model.torch_backend import pick_device
from agevision.training import calibration, ensemble, metrics
from agevision.training import teacher as teachers
from agevision.training.augment import AugmentConfig, augment
from agevision.training.crops import cached_crops, cached_geometry
from agevision.training.losses import loss_terms
from agevision.training.teacher import gender_targets
from agevision.training.utkface import load_folder, read_duplicate_groups, split

IMAGENET_FILE = "mobilenet_v2-b0353104.pth"


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in the model card. The defaults are those
    of `agevision train`; the shipped weights predate `balance`, `turned_boost` and the wild
    augmentation, and their own recipe is in their card's `config`.

    balance: each training face's gender loss is weighted by (1 / size of its ethnicity x
    gender x age-band group) ** balance (0: as UTKFace has them, 1: every group alike), so
    that the worst-off groups count for the gender head while the age head keeps UTKFace's
    age prior (drawing faces by group weights shifted that prior and cost 0.7 years of
    validation MAE at epoch 7 in the first try).
    turned_boost: faces turned away (by their keypoints) are drawn up to 1 + this times as
    often as frontal ones. init: a weights folder to start from (fine-tuning; its card must
    have the same input size) instead of ImageNet's features. augment: what the faces go through (see `AugmentConfig`).
    calib_augmented: the calibration temperatures are fitted on the calib faces as they are
    plus this many augmented copies, so that P(female) and the age interval hold for faces
    as the wild shows them, not only for UTKFace's.
    teacher: weights folders whose mean reading of each training face (P(female), each
    one's second gender network included) is mixed into the gender target with
    teacher_weight, and (their mean age distribution) into the age target with
    teacher_age_weight (see `training.teacher`); empty: the labels alone. A single Path
    is taken as a tuple of one.
    keep_gender: with init, each augmented face's gender target is what the init network
    itself reads of that same face (sigmoid of its gender logit) instead of its label, so
    that fine-tuning moves the age and keeps the gender reading of init as nearly as the
    network can.
    crop: where the face sits in its crop (`align.TIGHT`: the detector box fills it); it
    goes into the card, and runtime crops the same way.
    mirror_fill: the share of training faces drawn from crops filled past the picture's
    edge by mirroring the picture (`align.FILLS`) instead of smearing its edge, so that
    where a crop is wider than its UTKFace picture, what is around the face has texture as
    it does in a frame (0: all smeared, as before; validation and calibration crops are
    always smeared).
    """

    data_dir: Path
    out_dir: Path = Path("runs/weights")  # shipping is a deliberate copy into weights/
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
    init: Path | None = None
    teacher: tuple[Path, ...] = ()
    teacher_weight: float = 0.5
    teacher_age_weight: float = 0.0
    keep_gender: bool = False
    crop: CropGeometry = TIGHT
    mirror_fill: float = 0.0
    history: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.teacher is None or isinstance(self.teacher, (str, Path)):
            self.teacher = () if self.teacher is None else (Path(self.teacher),)
        self.teacher = tuple(Path(t) for t in self.teacher)
        if not 0 <= self.teacher_age_weight <= 1:
            raise AgevisionError(f"--teacher-age-weight is a share from 0 to 1, not {self.teacher_age_weight:g}")
        if self.teacher_age_weight > 0 and not self.teacher:
            raise AgevisionError("--teacher-age-weight needs a --teacher")
        if self.keep_gender and (self.init is None or self.teacher):
            raise AgevisionError("--keep-gender keeps the gender reading of --init: pass --init DIR, and no --teacher")
        if not 0 <= self.mirror_fill <= 1:
            raise AgevisionError(f"--mirror-fill is a share from 0 to 1, not {self.mirror_fill:g}")


IMAGENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"  # torchvision's own file


def imagenet_features(path: Path) -> dict[str, torch.Tensor]:
    """MobileNetV2 ImageNet weights ("features." tensors) from torchvision's file, offline.

    The file is loaded with `weights_only=True`: tensors only, never code (a crafted .pth
    cannot run anything). A file named like torchvision's must have its known sha256.
    Raises AgevisionError for a missing, corrupt or foreign file.
    """
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise AgevisionError(f"ImageNet weights not found: {path} (pass --imagenet PATH or --no-imagenet)")
    if path.name == IMAGENET_FILE:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != IMAGENET_SHA256:
            raise AgevisionError(f"{path} is not torchvision's {IMAGENET_FILE} (sha256 {digest[:16]}..., expected "
                                 f"{IMAGENET_SHA256[:16]}...)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read tensors is one error line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AgevisionError(f"{path} is not a weights file that can be read safely: {reason[:200]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AgevisionError(f"{path} does not hold a state dict of tensors")
    features = {k[len("features."):]: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")}
    if not features:
        raise AgevisionError(f"{path} holds no MobileNetV2 'features.' tensors")
    return features


def _to_batch(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float()


def _normalise(x: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """A [0, 255] RGB batch normalised as the card says (the estimator does the same)."""
    mean = torch.tensor(card.mean, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(card.std, device=x.device).view(1, 3, 1, 1) * 255
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def predict_logits(model: AgeGenderNet, crops: np.ndarray, device: torch.device, card: ModelCard,
                   batch: int = 256):
    """Raw (age logits, gender logit) numpy arrays for uint8 RGB crops as given, in eval mode."""
    model.eval()
    ages, genders = [], []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            a, g = split_logits(model(_normalise(_to_batch(crops[i : i + batch], device), card)).float())
            ages.append(a.cpu().numpy())
            genders.append(g.cpu().numpy())
    return np.concatenate(ages), np.concatenate(genders)


class _Data:
    """Crops and labels of one split part as numpy arrays; `mirrored`: the same faces' crops
    filled by mirroring (`TrainConfig.mirror_fill`), or None."""

    def __init__(self, samples, crops_by_name, mirrored_by_name=None):
        keep = [s for s in samples if s.path.name in crops_by_name]
        self.names = [s.path.name for s in keep]
        self.crops = np.stack([crops_by_name[n] for n in self.names]) if keep else np.zeros((0,))
        self.mirrored = np.stack([mirrored_by_name[n] for n in self.names]) if keep and mirrored_by_name else None
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


@dataclass
class _Parts:
    """The data of a run: the images, the split parts' crops, faces without a detection,
    and how often each training face is drawn."""

    samples: list
    train: _Data
    val: _Data
    calib: _Data
    no_face: int
    draw_weights: torch.Tensor
    gender_weights: torch.Tensor
    gender_targets: np.ndarray
    teacher_sha256: str | None = None  # the teachers' tensors (comma-joined), when there are any
    age_soft: np.ndarray | None = None  # (N, K) the teachers' age distributions of the training faces


def _load_data(cfg: TrainConfig, console) -> _Parts:
    """UTKFace images, split and cropped (cached), with the training draw weights."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
                                progress=lambda n: bar.advance(task, n), crop=cfg.crop)
    readable = [s for s, ok in zip(samples, crop_set.readable, strict=True) if ok]
    crops_by_name = {s.path.name: c for s, c in zip(readable, crop_set.crops, strict=True)}
    no_face = int((~crop_set.found).sum())
    console.print(f"crops: {len(readable)} readable, face found in {len(readable) - no_face}, "
                  f"fallback crop for {no_face}, unreadable {len(samples) - len(readable)}")
    mirrored_by_name = None
    if cfg.mirror_fill > 0:  # the same geometry (cached), only the fill differs
        mirrored = cached_crops([s.path for s in samples], cfg.input_size, cfg.cache_dir, cfg.detector,
                                crop=cfg.crop, fill="mirror")
        mirrored_by_name = {s.path.name: c for s, c in zip(readable, mirrored.crops, strict=True)}
    train_d = _Data(parts["train"], crops_by_name, mirrored_by_name)
    val_d, calib_d = (_Data(parts[k], crops_by_name) for k in ("val", "calib"))
    if len(train_d.names) == 0:
        raise AgevisionError("no training images left after the split")
    turned = _turned(cached_geometry([s.path for s in samples], cfg.cache_dir, cfg.detector), samples, train_d.names)
    draw = sample_weights(train_d.ages, train_d.genders, train_d.races, turned, 0.0, cfg.turned_boost)
    balanced = sample_weights(train_d.ages, train_d.genders, train_d.races, turned, cfg.balance, 0.0)
    reading = None
    if cfg.teacher:
        reading = teachers.read(cfg.teacher, train_d.crops, cfg.device)
        agree = float(np.mean((reading.p_female > 0.5) == (train_d.genders == 1)))
        age_mae = float(np.mean(np.abs(reading.age_probs @ np.arange(reading.age_probs.shape[1]) - train_d.ages)))
        console.print(f"teacher {', '.join(map(str, cfg.teacher))}: agrees with {agree:.1%} of the training "
                      f"gender labels, age MAE {age_mae:.2f} against theirs; its reading weighs "
                      f"{cfg.teacher_weight:g} in the gender target, {cfg.teacher_age_weight:g} in the age target")
    targets = gender_targets(train_d.genders, None if reading is None else reading.p_female, cfg.teacher_weight)
    age_soft = reading.age_probs if reading is not None and cfg.teacher_age_weight > 0 else None
    return _Parts(samples, train_d, val_d, calib_d, no_face, draw, balanced.float(), targets,
                  None if reading is None else reading.sha256, age_soft)


@dataclass
class _Run:
    """What a training run changes as it goes: model, optimiser, schedule, EMA, history."""

    model: AgeGenderNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: _Ema | None
    steps_per_epoch: int
    gender_teacher: AgeGenderNet | None = None  # the init network, frozen (cfg.keep_gender)
    epoch: int = 0
    history: list = field(default_factory=list)


def _new_run(cfg: TrainConfig, n_train: int, device: torch.device) -> _Run:
    """The network (ImageNet features if asked), AdamW with warm-up and cosine decay, EMA."""
    model = AgeGenderNet().to(device)
    if cfg.imagenet is not None:
        try:
            model.features.load_state_dict(imagenet_features(cfg.imagenet), strict=True)
        except RuntimeError:
            raise AgevisionError(f"{cfg.imagenet} does not hold MobileNetV2 weights") from None
    if cfg.init is not None:
        start, card = weights.load(cfg.init)
        if card.input_size != cfg.input_size or len(card.age_bins) != NUM_AGE_BINS:
            raise AgevisionError(f"--init {cfg.init}: its card has another input size or age bins")
        model.load_state_dict(start.state_dict())
    model = model.to(memory_format=torch.channels_last)
    gender_teacher = None
    if cfg.keep_gender:  # TrainConfig makes sure there is an init
        import copy

        gender_teacher = copy.deepcopy(model).eval().requires_grad_(False)
    _set_trainable(model, cfg.freeze_blocks)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(steps_per_epoch, total_steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup))) * 0.99 + 0.01

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    ema = _Ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    return _Run(model, optimizer, scheduler, ema, steps_per_epoch, gender_teacher)


def _resume(run: _Run, cfg: TrainConfig, key: str, device: torch.device, console) -> None:
    """Continue `run` from cfg.checkpoint when it was made under the same `key` (the whole
    recipe); tensors only are read (`weights_only=True`). AgevisionError on a file that
    cannot be read safely."""
    if not (cfg.resume and cfg.checkpoint.is_file()):
        return
    try:
        ckpt = torch.load(cfg.checkpoint, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a checkpoint that is not plain tensors is refused
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise AgevisionError(f"checkpoint {cfg.checkpoint} cannot be read safely ({reason}); delete it or pass "
                             "--no-resume") from None
    if not isinstance(ckpt, dict) or ckpt.get("config_key") != key:
        console.print(f"[yellow]checkpoint {cfg.checkpoint} is from another configuration; starting afresh")
        return
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.ema is not None and "ema" in ckpt:
        run.ema.model.load_state_dict(ckpt["ema"])
        run.ema.updates = int(ckpt.get("ema_updates", 0))
    run.epoch, run.history = int(ckpt["epoch"]), list(ckpt["history"])
    console.print(f"resuming from {cfg.checkpoint} after epoch {run.epoch}")


def _save_checkpoint(run: _Run, cfg: TrainConfig, key: str) -> None:
    """The run after an epoch, written to a temporary file and renamed onto cfg.checkpoint."""
    import io

    from agevision.files import write_atomic

    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "epoch": run.epoch, "history": run.history,
             "config_key": key, **({"ema": run.ema.model.state_dict(), "ema_updates": run.ema.updates}
                                   if run.ema else {})}
    buf = io.BytesIO()
    torch.save(state, buf)
    cfg.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cfg.checkpoint, buf.getvalue())


def _epoch(run: _Run, cfg: TrainConfig, data: _Parts, card: ModelCard, device: torch.device, bar) -> None:
    """One epoch over faces drawn by their weights, then the validation figures into history."""
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + run.epoch)
    train_d, val_d = data.train, data.val
    if bool((data.draw_weights == data.draw_weights[0]).all()):  # all alike: each face once, in a new order
        order = torch.randperm(len(train_d.names), generator=gen).numpy()
    else:
        order = torch.multinomial(data.draw_weights, len(train_d.names), replacement=True, generator=gen).numpy()
    task = bar.add_task("train", total=run.steps_per_epoch, epoch=f"{run.epoch + 1}/{cfg.epochs}", loss=0.0, val="")
    bins = torch.arange(NUM_AGE_BINS, dtype=torch.float32, device=device)
    _set_trainable(run.model, cfg.freeze_blocks)
    running = []
    for b in range(run.steps_per_epoch):
        idx = np.sort(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
        x = _normalise(augment(_to_batch(_train_crops(train_d, idx, cfg.mirror_fill, gen), device), gen, cfg.augment),
                       card)
        ages = torch.from_numpy(train_d.ages[idx]).to(device)
        genders = torch.from_numpy(data.gender_targets[idx]).to(device)
        if run.gender_teacher is not None:
            with torch.no_grad():
                genders = torch.sigmoid(split_logits(run.gender_teacher(x).float())[1])
        soft = None if data.age_soft is None else torch.from_numpy(data.age_soft[idx]).to(device)
        age_logits, gender_logit = split_logits(run.model(x).float())
        loss = loss_terms(age_logits, gender_logit, ages, genders, bins, cfg.l1_weight,
                          data.gender_weights[idx].to(device), soft, cfg.teacher_age_weight)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.model)
        running.append(loss.item())
        bar.update(task, advance=1, loss=float(np.mean(running[-50:])))
    row = {"epoch": run.epoch + 1, "train_loss": float(np.mean(running))}
    if len(val_d.names):
        a, g = predict_logits(run.ema.model if run.ema else run.model, val_d.crops, device, card)
        s = metrics.summary(val_d.ages, val_d.genders, *decode(a, g).as_tuple())
        row.update(val_mae=s["age_mae"], val_gender_acc=s["gender_accuracy"])
        bar.update(task, val=f"val MAE {s['age_mae']:.2f}  gender {s['gender_accuracy']:.1%}")
    run.history.append(row)
    run.epoch += 1


def card_metrics(card: ModelCard, age_logits: np.ndarray, gender_logits: np.ndarray, crops: np.ndarray,
                 ages: np.ndarray, genders: np.ndarray) -> dict:
    """`metrics.summary` of labelled faces read as agevision reads them with `card`: its
    temperatures, and its second gender network (on `crops`) where it has one. The card's
    `validation_metrics` are this on the validation faces."""
    pred = decode(age_logits, gender_logits, card.age_temperature, card.gender_temperature,
                  np.asarray(card.age_bins, np.float64))
    if card.gender_ensemble is not None:
        z = gender_logits.astype(np.float64) / card.gender_temperature
        second = ensemble.second_logits(crops, card.input_size, card.crop)
        pred.p_female = ensemble_p_female(card.gender_ensemble, z, second, pred.age)
    return metrics.summary(ages, genders, *pred.as_tuple())


def _final_card(model: AgeGenderNet, base: ModelCard, cfg: TrainConfig, data: _Parts, history: list,
                started: float, device: torch.device) -> ModelCard:
    """Calibration temperatures fitted on the calib faces (as they are and augmented), the
    validation figures with them, and the card that records the run."""
    calib_src = data.calib if len(data.calib.names) else data.val
    a, g, crops = _calibration_logits(model, calib_src, cfg, device, base)
    reps = 1 + cfg.calib_augmented
    genders = np.tile(calib_src.genders, reps)
    age_t, gender_t = calibration.fit(a, g, np.tile(calib_src.ages, reps), genders)
    card = replace(base, age_temperature=age_t, gender_temperature=gender_t)
    if len(genders):  # dlib's gender network beside ours (model.gender_ensemble)
        read = decode(a, g, age_t, gender_t).age
        card = ensemble.attach(card, g / gender_t, ensemble.second_logits(crops, base.input_size, base.crop), genders,
                               read)
    val_metrics = {}
    if len(data.val.names):
        crops = denoise(data.val.crops, card.denoise)
        a, g = predict_logits(model, crops, device, base)
        val_metrics = card_metrics(card, a, g, crops, data.val.ages, data.val.genders)
    extra = {
        "input_format": "RGB uint8 crops from agevision.align.align_crops, scaled to [0,1] then normalised",
        "outputs": "101 age-bin logits (ages 0..100) then 1 gender logit (sigmoid = P(female))",
        "init": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1" if cfg.imagenet else "random",
        "training_data": {
            "dataset": "UTKFace (aligned & cropped), labels from file names",
            "images": len(data.samples), "train": len(data.train.names), "val": len(data.val.names),
            "calib": len(data.calib.names), "split_seed": cfg.seed,
            "split": "stratified by 5-year age band; duplicate groups kept on one side",
            "fallback_crops": data.no_face,
        },
        "validation_metrics": val_metrics,
        "history": history,
        "config": _config_dict(cfg),
        **({"teacher_tensors_sha256": data.teacher_sha256} if cfg.teacher else {}),
        "training_seconds": round(time.time() - started),
        "device": str(device),
        "command": " ".join(["agevision", *sys.argv[1:]]) if sys.argv else "",
    }
    return replace(card, extra={**card.extra, **extra})


def train(cfg: TrainConfig, console=None) -> dict:
    """Run a full training as configured; returns the model card that was written (a dict).

    Raises AgevisionError on unusable data or an unreadable checkpoint. Progress goes to
    `console` (a rich Console).
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
    base = ModelCard(input_size=cfg.input_size, age_bins=tuple(float(a) for a in range(NUM_AGE_BINS)),
                     denoise=Denoise(), crop=cfg.crop)
    data = _load_data(cfg, console)
    run = _new_run(cfg, len(data.train.names), device)
    key = _config_key(cfg, len(data.samples), data.teacher_sha256)
    _resume(run, cfg, key, device, console)
    columns = (TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}  {task.fields[val]}"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        while run.epoch < cfg.epochs:
            _epoch(run, cfg, data, base, device, bar)
            _save_checkpoint(run, cfg, key)
    model = (run.ema.model if run.ema is not None else run.model).eval()
    card = _final_card(model, base, cfg, data, run.history, started, device)
    written = weights.save(model, card, cfg.out_dir)
    console.print(f"weights written to {cfg.out_dir}")
    return written.to_dict()


def _train_crops(data: _Data, idx: np.ndarray, mirror_fill: float, gen: torch.Generator) -> np.ndarray:
    """The crops of faces `idx`, each drawn from the mirrored crops with chance `mirror_fill`."""
    if data.mirrored is None or mirror_fill <= 0:
        return data.crops[idx]
    mirror = (torch.rand(len(idx), generator=gen) < mirror_fill).numpy()
    return np.where(mirror[:, None, None, None], data.mirrored[idx], data.crops[idx])


def _config_dict(cfg: TrainConfig) -> dict:
    """The config as JSON-ready values (paths as strings; one teacher as its path, several as a
    list), without the run's history."""
    out = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "history"}
    out["teacher"] = None if not cfg.teacher else str(cfg.teacher[0]) if len(cfg.teacher) == 1 else [
        str(t) for t in cfg.teacher]
    return out


# fields that say where things go or how to run, not what is trained
_RUN_ONLY = ("out_dir", "cache_dir", "checkpoint", "device", "resume")


def _config_key(cfg: TrainConfig, n: int, teacher_sha256: str | None = None) -> str:
    """A key for resuming: every field that changes the training (the recipe, augmentation
    included), plus the number of images and the teacher's tensors (when there is a
    teacher); a checkpoint made under another key is not resumed."""
    import hashlib
    import json

    recipe = {k: v for k, v in _config_dict(cfg).items() if k not in _RUN_ONLY}
    if not cfg.teacher:  # a run without a teacher keeps the key it had before teachers existed
        recipe = {k: v for k, v in recipe.items() if k not in ("teacher", "teacher_weight")}
    else:
        recipe["teacher_tensors_sha256"] = teacher_sha256
    if not cfg.teacher_age_weight:  # nor one whose teachers teach gender only
        recipe.pop("teacher_age_weight", None)
    if not cfg.keep_gender:  # nor does one that does not keep the gender of its init
        recipe.pop("keep_gender", None)
    if not cfg.mirror_fill:  # nor one that smears every crop
        recipe.pop("mirror_fill", None)
    return hashlib.sha256(json.dumps({"recipe": recipe, "images": n}, sort_keys=True).encode()).hexdigest()[:24]


def sample_weights(ages: np.ndarray, genders: np.ndarray, races: np.ndarray, turned: np.ndarray,
                   balance: float, turned_boost: float) -> torch.Tensor:
    """Weights of the training faces, (N,) float64 tensor with mean 1: (1 / size of the face's
    group) ** balance x (1 + turned_boost x turned) (see `TrainConfig`).

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


def calibration_copies(crops: np.ndarray, cfg: TrainConfig) -> list[np.ndarray]:
    """The calibration crops as they are and `cfg.calib_augmented` augmented copies (fixed
    seed from cfg.seed), each (N, S, S, 3) uint8 RGB: what calibration is fitted on."""
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    return [crops] + [augmented_copy(crops, gen, cfg.augment) for _ in range(cfg.calib_augmented)]


def augmented_copy(crops: np.ndarray, generator: torch.Generator, config: AugmentConfig) -> np.ndarray:
    """One augmented copy of (N, S, S, 3) uint8 RGB crops, as `config` says, the same shape
    and type; the draws come from `generator`."""
    batches = []
    for i in range(0, len(crops), 256):
        x = augment(_to_batch(crops[i : i + 256], torch.device("cpu")), generator, config)
        batches.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(batches) if batches else crops[:0]


def _calibration_logits(model: AgeGenderNet, data: _Data, cfg: TrainConfig, device: torch.device, card: ModelCard):
    """(age logits, gender logits, crops) of `calibration_copies` of the calibration faces,
    concatenated in that order, after the card's `denoise` rule (as the Estimator reads them)."""
    crops = denoise(np.concatenate(calibration_copies(data.crops, cfg)), card.denoise)
    a, g = predict_logits(model, crops, device, card)
    return a, g, crops


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
