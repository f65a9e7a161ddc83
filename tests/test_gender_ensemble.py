"""The second gender network beside the model: card entry, file checks, the rule, the fit."""

import json
import shutil

import numpy as np
import pytest

from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.card import ModelCard
from agevision.model.estimator import Estimator
from agevision.model.gender_ensemble import chips, combine
from agevision.training import ensemble
from tests.conftest import face_crops, pick


@pytest.fixture(scope="module")
def both():
    return Estimator(device="cpu"), Estimator(device="cpu", ensemble=False)


def test_the_shipped_card_names_the_dlib_network_and_it_loads(both):
    with_it, alone = both
    spec = with_it.card.gender_ensemble
    assert spec is not None and spec.model == ensemble.MODEL and spec.sha256 == ensemble.SHA256
    assert spec.region == ensemble.region(with_it.input_size, with_it.card.crop) and spec.min_age == ensemble.MIN_AGE
    assert 0 < spec.weight and 0.01 <= spec.temperature
    assert with_it.ensemble is not None and alone.ensemble is None


def test_adults_get_the_sum_children_keep_the_models_own_reading(both, utkface):
    with_it, alone = both
    prefixes = ("3_", "5_", "8_", "25_1", "25_0", "34_1", "45_0", "60_1")
    paths = [p for prefix in prefixes for p in pick(utkface, prefix, 2)]
    crops = face_crops(paths, with_it.card)
    a, b = with_it.predict(crops), alone.predict(crops)
    assert np.array_equal(a.age, b.age)  # the age is the model's alone
    z = np.log(b.p_female / (1 - b.p_female))
    expected = combine(with_it.card.gender_ensemble, z, with_it.ensemble.logits(crops), b.age)
    assert np.allclose(a.p_female, 1 / (1 + np.exp(-expected)), atol=1e-5)
    young = b.age < ensemble.MIN_AGE
    assert young.any() and (~young).any()
    assert np.allclose(a.p_female[young], b.p_female[young])
    assert not np.allclose(a.p_female[~young], b.p_female[~young])


def test_the_chip_is_the_named_square_shrunk():
    crops = np.zeros((2, 112, 112, 3), np.uint8)
    crops[:, 19:92, 20:93] = 200  # the square: bright, the rest black
    out = chips(crops, (20, 19, 93, 92))
    assert out.shape == (2, 32, 32, 3) and (out == 200).all()


@pytest.mark.parametrize("change, why", [
    ({"model": "../x.onnx"}, "file name"), ({"region": [0, 0, 200, 50]}, "region"),
    ({"weight": -1}, "weight"), ({"temperature": 0}, "temperature"), ({"sha256": "ab"}, "sha256"),
    ({"min_age": "old"}, "min_age"),
])
def test_a_bad_card_entry_is_refused_naming_the_field(change, why):
    card = weights.load_card(None).to_dict()
    card["gender_ensemble"] = {**card["gender_ensemble"], **change}
    with pytest.raises(AgevisionError, match="gender_ensemble") as err:
        ModelCard.from_dict(card)
    assert why.split()[0] in str(err.value)


def test_a_card_without_the_entry_reads_as_before():
    card = weights.load_card(None).to_dict()
    del card["gender_ensemble"]
    assert ModelCard.from_dict(card).gender_ensemble is None


def test_a_changed_network_file_is_one_clear_error(tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(weights.paths(None)[0].parent, folder)
    data = bytearray((folder / ensemble.MODEL).read_bytes())
    data[-100] ^= 0xFF
    (folder / ensemble.MODEL).write_bytes(bytes(data))
    with pytest.raises(AgevisionError, match="checksum differs"):
        Estimator(folder, device="cpu")
    card = json.loads((folder / "agegender.json").read_text())
    card["gender_ensemble"]["model"] = "missing.onnx"
    (folder / "agegender.json").write_text(json.dumps(card))
    with pytest.raises(AgevisionError, match="missing.onnx missing"):
        Estimator(folder, device="cpu")


def test_the_fit_weighs_a_telling_second_opinion_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.5
    truth = np.where(y, 2.0, -2.0)
    model = truth + rng.normal(0, 2, len(y))
    telling = truth + rng.normal(0, 2, len(y))  # errs apart from the model
    weight, temperature, figures = ensemble.fit(model, telling, y)
    assert weight >= 0.5 and figures["nll_with"] < figures["nll_alone"]
    weight, _, figures = ensemble.fit(model, rng.normal(0, 2, len(y)), y)
    assert weight <= 0.1 and figures["nll_with"] <= figures["nll_alone"]


def test_dlib_s_square_is_the_same_part_of_the_face_in_either_crop():
    from agevision.align import TIGHT
    from agevision.model.card import CropGeometry

    assert ensemble.region(112) == ensemble.REGION_112 == ensemble.region(112, CropGeometry())
    assert ensemble.region(112, TIGHT) == (0, 0, 112, 112)  # it reaches 2-4 px past the tight crop's edges
    half = CropGeometry(box_fraction=0.31, center=(0.5, 0.47))  # the face half as wide as in the old crop
    x0, y0, x1, y1 = ensemble.region(112, half)
    assert abs((x1 - x0) - 73 / 2) <= 1 and abs((x0 + x1) / 2 - 56.5) <= 1
