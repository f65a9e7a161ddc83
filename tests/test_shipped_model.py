"""The shipped weights on real faces: predictions within sane bounds."""

import numpy as np
import pytest

from agevision.model.estimator import Estimator
from tests.conftest import face_crops, pick


@pytest.fixture(scope="module")
def estimator():
    return Estimator(device="cpu")


def _predict(estimator, paths):
    return estimator.predict(face_crops(paths, estimator.card))


def test_card_describes_the_weights(estimator):
    card = estimator.card
    assert card.input_size == estimator.input_size
    assert len(card.age_bins) == 101
    assert card.extra["training_data"]["images"] > 18000
    assert card.extra["validation_metrics"]["n"] > 2000
    assert card.tensors_sha256 is not None


def test_toddlers_read_young_and_elders_read_old(estimator, utkface):
    kids = _predict(estimator, pick(utkface, "2_0_", 3) + pick(utkface, "3_1_", 3))
    old = _predict(estimator, pick(utkface, "80_0_", 3) + pick(utkface, "85_1_", 3))
    assert np.all(kids.age < 12), kids.age
    assert np.all(old.age > 50), old.age
    for p in (kids, old):
        assert np.all((p.age_low <= p.age) & (p.age <= p.age_high))
        assert np.all((p.p_female >= 0) & (p.p_female <= 1))


def test_adult_gender_mostly_right(estimator, utkface):
    men = _predict(estimator, pick(utkface, "35_0_0_", 5))
    women = _predict(estimator, pick(utkface, "35_1_0_", 5))
    correct = (men.p_female < 0.5).sum() + (women.p_female >= 0.5).sum()
    assert correct >= 8, (men.p_female, women.p_female)
