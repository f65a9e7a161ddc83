"""The model card: everything needed to use a weights file, typed and checked once.

Read from `weights/agegender.json` by `weights.load`, and used by the estimator and by
training alike: the input size, the normalisation, the age bins and the calibration
temperatures come from here in both places. The card also keeps what is only for people
(training data, metrics, history); those stay in `extra`. No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agevision.errors import AgevisionError

ARCHITECTURE = "mobilenet_v2-agegender"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _number_in(v: object, lo: float, hi: float) -> bool:
    """Whether a card value is a plain number (not a bool) from lo to hi."""
    return not isinstance(v, bool) and isinstance(v, int | float) and lo <= v <= hi


@dataclass(frozen=True)
class GenderEnsemble:
    """A second gender network whose logit is added to the model's (see `model.gender_ensemble`).

    model: its ONNX file name (beside the weights, else in the shipped weights folder).
    sha256: that file's checksum. region: (x0, y0, x1, y1), the square of the aligned crop,
    in crop pixels, that it reads (area-shrunk to its input). weight, temperature:
    P(female) = sigmoid((z_model / gender_temperature + weight * z_second) / temperature)
    for faces the model reads as `min_age` or older; younger ones keep the model's own.
    """

    model: str
    sha256: str
    region: tuple[int, int, int, int]
    weight: float
    temperature: float
    min_age: float = 0.0

    @staticmethod
    def from_dict(d: object, input_size: int, where: str) -> GenderEnsemble:
        """A checked entry from the card's `gender_ensemble` dict; AgevisionError if wrong."""
        def bad(why: str) -> AgevisionError:
            return AgevisionError(f"{where}: gender_ensemble {why}")

        if not isinstance(d, dict):
            raise bad("must be an object")
        model, digest, region = d.get("model"), d.get("sha256"), d.get("region")
        if not isinstance(model, str) or not model.endswith(".onnx") or "/" in model or "\\" in model \
                or model.startswith("."):
            raise bad("model must be an .onnx file name, no folders")
        if not isinstance(digest, str) or len(digest) != 64:
            raise bad("sha256 must be 64 hex digits")
        if (not isinstance(region, list) or len(region) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in region)
                or not (0 <= region[0] < region[2] <= input_size and 0 <= region[1] < region[3] <= input_size)):
            raise bad(f"region must be 4 whole pixels x0 < x1, y0 < y1 inside the {input_size} px crop")
        numbers = {}
        for name, lo, hi in (("weight", 0.0, 10.0), ("temperature", 0.01, 100.0), ("min_age", 0.0, 200.0)):
            v = d.get(name, 0.0 if name == "min_age" else None)
            if not _number_in(v, lo, hi):
                raise bad(f"{name} must be a number from {lo} to {hi}")
            numbers[name] = float(v)
        return GenderEnsemble(model, digest, tuple(region), numbers["weight"], numbers["temperature"],
                              numbers["min_age"])

    def to_dict(self) -> dict:
        return {"model": self.model, "sha256": self.sha256, "region": list(self.region), "weight": self.weight,
                "temperature": self.temperature, "min_age": self.min_age}


@dataclass(frozen=True)
class Denoise:
    """Which crops are blurred before the network reads them, and how much (`model.denoise`).

    above: crops whose noise level (`denoise.noise_levels`, grey levels) is above this are
    blurred. scale: the blur's sigma in pixels is this times the square root of the level.
    The defaults are the rule `agevision train` writes: the threshold above the levels of
    clean, compressed and video crops, the blur the best one for UTKFace validation faces
    with added noise (`scripts/noise_report.py`).
    """

    above: float = 1.5
    scale: float = 0.4

    @staticmethod
    def from_dict(d: object, where: str) -> Denoise:
        """A checked entry from the card's `denoise` dict; AgevisionError if wrong."""
        if not isinstance(d, dict):
            raise AgevisionError(f"{where}: denoise must be an object")
        values = {}
        for name, lo, hi in (("above", 0.0, 255.0), ("scale", 0.0, 10.0)):
            v = d.get(name)
            if not _number_in(v, lo, hi):
                raise AgevisionError(f"{where}: denoise {name} must be a number from {lo} to {hi}")
            values[name] = float(v)
        return Denoise(**values)

    def to_dict(self) -> dict:
        return {"above": self.above, "scale": self.scale}


@dataclass(frozen=True)
class CropGeometry:
    """Where the face sits in its aligned crop (`align.crop_transforms`).

    box_fraction: the share of the crop's width that the detector box's width fills.
    center: where the box centre lands, (x, y) as shares of the crop's size. The defaults
    are the geometry of cards without a `crop` field (weights made before it): the box
    fills 62% of the crop's width and the rest shows what is around the face. On UTKFace's
    tight 200 x 200 pictures that rest lies outside the picture and is its edge smeared
    outwards, so such weights never saw real hair or background there; `align.TIGHT` is
    the geometry `agevision train` uses now.
    """

    box_fraction: float = 0.62
    center: tuple[float, float] = (0.5, 0.47)

    @staticmethod
    def from_dict(d: object, where: str) -> CropGeometry:
        """A checked entry from the card's `crop` dict; AgevisionError if wrong."""
        if not isinstance(d, dict):
            raise AgevisionError(f"{where}: crop must be an object")
        fraction, center = d.get("box_fraction"), d.get("center")
        if not _number_in(fraction, 0.1, 2.0):
            raise AgevisionError(f"{where}: crop box_fraction must be a number from 0.1 to 2.0")
        if not isinstance(center, list) or len(center) != 2 or not all(_number_in(c, 0.0, 1.0) for c in center):
            raise AgevisionError(f"{where}: crop center must be two numbers from 0 to 1")
        return CropGeometry(float(fraction), (float(center[0]), float(center[1])))

    def to_dict(self) -> dict:
        return {"box_fraction": self.box_fraction, "center": list(self.center)}


@dataclass(frozen=True)
class ModelCard:
    """architecture: the network's name. input_size: crop side in pixels. mean, std: per RGB
    channel, on [0, 1] pixels. age_bins: the age of each age output. age_temperature,
    gender_temperature: calibration (logits are divided by them). flip_test: read each crop
    mirrored too and average. tensors_sha256: checksum of the weights' tensors (see
    `weights.tensors_digest`), None on cards older than it. gender_ensemble: a second
    gender network read beside this one (`GenderEnsemble`), or None. denoise: which noisy
    crops are blurred before the network (`Denoise`), or None for none. extra: the rest of
    the card."""

    architecture: str = ARCHITECTURE
    input_size: int = 112
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    age_bins: tuple[float, ...] = tuple(float(a) for a in range(101))
    age_temperature: float = 1.0
    gender_temperature: float = 1.0
    flip_test: bool = False
    tensors_sha256: str | None = None
    gender_ensemble: GenderEnsemble | None = None
    denoise: Denoise | None = None
    crop: CropGeometry = field(default_factory=CropGeometry)
    extra: dict = field(default_factory=dict, compare=False)

    @staticmethod
    def from_dict(d: dict, where: str = "model card") -> ModelCard:
        """A checked card from its JSON dict; AgevisionError naming the field that is wrong."""
        if not isinstance(d, dict):
            raise AgevisionError(f"{where} is not a JSON object")
        missing = [k for k in ("architecture", "input_size", "mean", "std", "age_bins") if k not in d]
        if missing:
            raise AgevisionError(f"{where} lacks {', '.join(missing)}")

        def bad(name: str, why: str) -> AgevisionError:
            return AgevisionError(f"{where}: {name} {why} (got {str(d.get(name))[:60]!r})")

        if d["architecture"] != ARCHITECTURE:
            raise AgevisionError(f"{where} names architecture {d['architecture']!r}, this agevision knows "
                                 f"{ARCHITECTURE!r}")
        size = d["input_size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 1024:
            raise bad("input_size", "must be a whole number of pixels from 32 to 1024")

        def numbers(name: str, n: int | None, positive: bool = False) -> tuple[float, ...]:
            v = d.get(name)
            if not isinstance(v, list) or (n is not None and len(v) != n) or not v:
                raise bad(name, f"must be a list of {n if n else 'some'} numbers")
            if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v):
                raise bad(name, "must hold finite numbers only")
            if positive and min(v) <= 0:
                raise bad(name, "must be above 0")
            return tuple(float(x) for x in v)

        mean, std = numbers("mean", 3), numbers("std", 3, positive=True)
        bins = numbers("age_bins", None)
        if list(bins) != sorted(bins) or len(bins) < 2:
            raise bad("age_bins", "must be at least 2 ages in increasing order")

        def temperature(name: str) -> float:
            t = d.get(name, 1.0)
            if not _number_in(t, 0.01, 100):
                raise bad(name, "must be a number from 0.01 to 100")
            return float(t)

        digest = d.get("tensors_sha256")
        if digest is not None and (not isinstance(digest, str) or len(digest) != 64):
            raise bad("tensors_sha256", "must be 64 hex digits")
        ensemble = d.get("gender_ensemble")
        if ensemble is not None:
            ensemble = GenderEnsemble.from_dict(ensemble, size, where)
        denoise = d.get("denoise")
        if denoise is not None:
            denoise = Denoise.from_dict(denoise, where)
        crop = CropGeometry.from_dict(d["crop"], where) if "crop" in d else CropGeometry()
        known = {"architecture", "input_size", "mean", "std", "age_bins", "age_temperature", "gender_temperature",
                 "flip_test", "tensors_sha256", "gender_ensemble", "denoise", "crop"}
        return ModelCard(ARCHITECTURE, size, mean, std, bins, temperature("age_temperature"),
                         temperature("gender_temperature"), bool(d.get("flip_test", False)), digest, ensemble,
                         denoise, crop, {k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        """The card as JSON-ready values, the checked fields first."""
        out = {"architecture": self.architecture, "input_size": self.input_size, "mean": list(self.mean),
               "std": list(self.std), "age_bins": [int(a) if float(a).is_integer() else a for a in self.age_bins],
               "age_temperature": self.age_temperature, "gender_temperature": self.gender_temperature,
               "flip_test": self.flip_test}
        if self.tensors_sha256:
            out["tensors_sha256"] = self.tensors_sha256
        if self.gender_ensemble is not None:
            out["gender_ensemble"] = self.gender_ensemble.to_dict()
        if self.denoise is not None:
            out["denoise"] = self.denoise.to_dict()
        if self.crop != CropGeometry():
            out["crop"] = self.crop.to_dict()
        return out | self.extra
