"""Noisy crops: the noise level measured, the noisy ones blurred, and real faces read as
without the noise."""

import json

import cv2
import numpy as np
import pytest

from agevision.errors import AgevisionError
from agevision.model.card import Denoise, ModelCard
from agevision.model.denoise import blur_sigma, denoise, noise_level, noise_levels
from agevision.model.weights import paths
from tests.conftest import face_crops, pick


def _noisy(crops: np.ndarray, sigma: float, seed: int = 0, grey: bool = False) -> np.ndarray:
    """Gaussian noise of `sigma` on each channel apart, or (grey) the same on all three."""
    noise = np.random.default_rng(seed).normal(0, sigma, crops.shape[:3] + ((1,) if grey else (3,)))
    return np.clip(crops + noise, 0, 255).astype(np.uint8)


def _shaded(n: int = 3) -> np.ndarray:
    """Smooth crops: a gradient and a soft blob, no noise."""
    y, x = np.mgrid[0:112, 0:112].astype(np.float32)
    grey = 60 + x + 40 * np.exp(-((x - 56) ** 2 + (y - 50) ** 2) / 800)
    return np.repeat(np.stack([grey] * n)[..., None], 3, axis=3).astype(np.uint8)


def test_white_noise_measures_its_grey_level_sigma():
    for sigma in (2, 5, 10):
        level = noise_levels(_noisy(_shaded(), sigma, grey=True))
        assert np.all(np.abs(level - sigma) < 0.1 * sigma), (sigma, level)
    assert np.all(noise_levels(_shaded()) < 0.5)


def test_only_noisy_crops_are_blurred():
    clean, noisy = _shaded(2), _noisy(_shaded(2), 6)
    both = np.concatenate([clean, noisy])
    out = denoise(both, Denoise())
    assert np.array_equal(out[:2], clean)
    assert noise_levels(out[2:]).max() < Denoise().above < noise_levels(noisy).min()
    assert denoise(clean, Denoise()) is clean  # nothing to do: no copy
    assert denoise(noisy, None) is noisy


@pytest.fixture(scope="module")
def estimator():
    from agevision.model.estimator import Estimator

    return Estimator(device="cpu")


def test_real_faces_keep_their_clean_reading_under_sensor_noise(estimator, utkface):
    files = pick(utkface, "30_0_0_", 4) + pick(utkface, "30_1_1_", 4)
    crops = face_crops(files, estimator.card)
    assert noise_levels(crops).max() < estimator.card.denoise.above  # clean photos are left alone
    clean, noisy = estimator.predict(crops), estimator.predict(_noisy(crops, 6))
    assert np.abs(noisy.age - clean.age).mean() < 3, (clean.age, noisy.age)
    assert np.all((noisy.p_female >= 0.5) == (clean.p_female >= 0.5))
    raw = estimator._logits(_noisy(crops, 6))[0]  # the network on the noisy crops as they are
    assert np.abs(raw - estimator.logits(_noisy(crops, 6))[0]).max() > 0.1


def test_the_card_rule_is_checked_and_optional():
    card = json.loads(paths()[1].read_text())
    assert ModelCard.from_dict(card).denoise == Denoise(1.5, 0.4)
    assert ModelCard.from_dict(card).to_dict()["denoise"] == {"above": 1.5, "scale": 0.4}
    del card["denoise"]
    assert ModelCard.from_dict(card).denoise is None
    for bad in ("yes", {"above": -1, "scale": 0.4}, {"above": 1.5}, {"above": True, "scale": 0.4}):
        card["denoise"] = bad
        with pytest.raises(AgevisionError, match="denoise"):
            ModelCard.from_dict(card)


def _small_face_frame(utkface, side: int):
    """A UTKFace photo shrunk to `side` px in a grey 200 x 200 frame, and its Faces record."""
    from agevision.faces import Faces
    from agevision.images import crop_face

    small = cv2.resize(cv2.imread(str(pick(utkface, "30_1_1_")[0])), (side, side), interpolation=cv2.INTER_AREA)
    frame = np.full((200, 200, 3), 128, np.uint8)
    frame[70 : 70 + side, 70 : 70 + side] = small
    g = crop_face(small)
    return frame, Faces(boxes=g.boxes + 70, keypoints=g.keypoints + 70, scores=g.scores)


def test_a_small_noisy_face_is_blurred_in_the_frame_before_it_is_enlarged(utkface):
    from agevision.align import align_crops

    frame, faces = _small_face_frame(utkface, 40)
    noisy = _noisy(frame[None], 8)[0]
    clean, plain, ruled = (align_crops(f, faces, 112, r) for f, r in ((frame, Denoise()), (noisy, None),
                                                                      (noisy, Denoise())))
    assert noise_levels(plain)[0] < Denoise().above  # enlarged, the noise hides from the crop's measure
    assert noise_level(noisy[60:120, 60:120]) > Denoise().above  # in the frame it does not
    assert np.array_equal(clean, align_crops(frame, faces, 112))  # a clean frame: nothing blurred
    # the noisy face blurred in place: what is left of the noise is a fraction of it
    sigma = blur_sigma(noise_level(noisy[60:120, 60:120]), Denoise())
    blurred = align_crops(cv2.GaussianBlur(frame, (0, 0), sigma), faces, 112)
    rms = [float(np.sqrt(((a.astype(np.float32) - b) ** 2).mean())) for a, b in ((plain, clean), (ruled, blurred))]
    assert rms[1] < 0.5 * rms[0], rms


def test_a_large_face_is_left_to_the_crop_measure(utkface):
    from agevision.align import align_crops

    frame, faces = _small_face_frame(utkface, 120)  # shrunk into the crop: its noise averages out there
    noisy = _noisy(frame[None], 8)[0]
    assert np.array_equal(align_crops(noisy, faces, 112, Denoise()), align_crops(noisy, faces, 112))
