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


@dataclass(frozen=True)
class ModelCard:
    """architecture: the network's name. input_size: crop side in pixels. mean, std: per RGB
    channel, on [0, 1] pixels. age_bins: the age of each age output. age_temperature,
    gender_temperature: calibration (logits are divided by them). flip_test: read each crop
    mirrored too and average. tensors_sha256: checksum of the weights' tensors (see
    `weights.tensors_digest`), None on cards older than it. extra: the rest of the card."""

    architecture: str = ARCHITECTURE
    input_size: int = 112
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    age_bins: tuple[float, ...] = tuple(float(a) for a in range(101))
    age_temperature: float = 1.0
    gender_temperature: float = 1.0
    flip_test: bool = False
    tensors_sha256: str | None = None
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
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0.01 <= t <= 100:
                raise bad(name, "must be a number from 0.01 to 100")
            return float(t)

        digest = d.get("tensors_sha256")
        if digest is not None and (not isinstance(digest, str) or len(digest) != 64):
            raise bad("tensors_sha256", "must be 64 hex digits")
        known = {"architecture", "input_size", "mean", "std", "age_bins", "age_temperature", "gender_temperature",
                 "flip_test", "tensors_sha256"}
        return ModelCard(ARCHITECTURE, size, mean, std, bins, temperature("age_temperature"),
                         temperature("gender_temperature"), bool(d.get("flip_test", False)), digest,
                         {k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        """The card as JSON-ready values, the checked fields first."""
        out = {"architecture": self.architecture, "input_size": self.input_size, "mean": list(self.mean),
               "std": list(self.std), "age_bins": [int(a) if float(a).is_integer() else a for a in self.age_bins],
               "age_temperature": self.age_temperature, "gender_temperature": self.gender_temperature,
               "flip_test": self.flip_test}
        if self.tensors_sha256:
            out["tensors_sha256"] = self.tensors_sha256
        return out | self.extra
