from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from agevision.defaults import DUPLICATES_FILE as DUPLICATES
from agevision.defaults import IMAGENET_FILE as IMAGENET
from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.estimator import Estimator
from agevision.model.net import AgeGenderNet
from agevision.training.augment import AugmentConfig, augment
from agevision.training.losses import age_targets
from agevision.training.train import TrainConfig, sample_weights, train

# 96 faces for 4 epochs learn only under light augmentation; the full recipe is tested apart
MILD = AugmentConfig(turn=0.0, light=0.0, occlude=0.0, noise=0.0, compress=0.0, zoom_out=0.08)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, utkface):
    tmp = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(data_dir=utkface, out_dir=tmp / "weights", duplicates=DUPLICATES, imagenet=IMAGENET,
                      cache_dir=tmp / "cache", checkpoint=tmp / "ckpt.pt", limit=96, epochs=4, batch_size=16,
                      lr=1e-3, input_size=96, l1_weight=0.05, ema_decay=0.0, device="cpu",
                      augment=MILD, balance=0.0, turned_boost=0.0, calib_augmented=1)
    card = train(cfg, Console(quiet=True))
    return cfg, card


def test_tiny_training_run_lowers_the_loss(tiny_run):
    cfg, card = tiny_run
    losses = [row["train_loss"] for row in card["history"]]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses
    assert card["training_data"]["split_seed"] == 0
    assert card["training_data"]["images"] == 96
    assert set(card["validation_metrics"]) >= {"age_mae", "gender_accuracy", "gender_ece", "interval_coverage"}
    ens = card["gender_ensemble"]  # dlib's gender network fitted beside the new weights
    assert ens["model"] == "dlib_gender_v1.onnx" and ens["min_age"] == 13.0
    assert 0 <= ens["weight"] <= 1.5 and 0.3 <= ens["temperature"] <= 4.0
    assert card["gender_ensemble_fit"]["faces"] >= 1


def test_train_command_defaults_are_the_config_defaults():
    import dataclasses
    import inspect

    from agevision.cli import train as command

    config = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    shared = {"epochs", "batch_size", "lr", "input_size", "freeze_blocks", "l1_weight", "ema_decay", "seed",
              "limit", "cache_dir", "checkpoint", "resume", "device"}
    defaults = {name: p.default for name, p in inspect.signature(command).parameters.items() if name in shared}
    assert defaults == {name: config[name] for name in shared}


def test_training_resumes_from_its_checkpoint(tiny_run):
    import io

    cfg, card = tiny_run
    before = cfg.checkpoint.stat().st_mtime_ns
    log = io.StringIO()
    again = train(cfg, Console(file=log, width=200))  # resume=True: all epochs are done, nothing to train
    assert "resuming from" in log.getvalue() and "after epoch 4" in log.getvalue()
    assert cfg.checkpoint.stat().st_mtime_ns == before  # no epoch was trained again
    assert again["history"] == card["history"]


def test_trained_weights_load_into_the_estimator(tiny_run):
    cfg, _ = tiny_run
    est = Estimator(cfg.out_dir, device="cpu")
    assert est.ensemble is not None  # its file found in the shipped weights folder
    pred = est.predict(np.zeros((3, est.input_size, est.input_size, 3), np.uint8))
    assert pred.age.shape == (3,) and np.all((pred.age_low <= pred.age) & (pred.age <= pred.age_high))
    assert np.allclose(pred.age_probs.sum(1), 1, atol=1e-4)
    with pytest.raises(AgevisionError, match="crops must be"):
        est.predict(np.zeros((1, 50, 50, 3), np.uint8))


def test_corrupt_weights_give_one_clear_error(tiny_run, tmp_path: Path):
    cfg, _ = tiny_run
    for p in weights.paths(cfg.out_dir):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    tensors, card = weights.paths(tmp_path)
    tensors.write_bytes(tensors.read_bytes()[:1000])
    with pytest.raises(AgevisionError, match="corrupt"):
        weights.load(tmp_path)
    card.write_text("{not json")
    with pytest.raises(AgevisionError, match="not valid JSON"):
        weights.load(tmp_path)


def test_mismatched_weights_are_refused(tiny_run, tmp_path: Path):
    from safetensors.torch import save_file

    cfg, card_dict = tiny_run
    (tmp_path / "agegender.json").write_text(weights.paths(cfg.out_dir)[1].read_text())
    state = AgeGenderNet().state_dict()
    state["head.weight"] = torch.zeros(7, 1280)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "agegender.safetensors"))
    with pytest.raises(AgevisionError, match="does not match"):
        weights.load(tmp_path)
    del state["head.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "agegender.safetensors"))
    with pytest.raises(AgevisionError, match="does not match"):
        weights.load(tmp_path)


def test_age_targets_are_distributions_centred_on_the_age():
    bins = torch.arange(101, dtype=torch.float32)
    t = age_targets(torch.tensor([0, 30, 116]), bins)
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert t.argmax(1).tolist() == [0, 30, 100]


def test_compression_augmentation_smooths_the_chosen_faces_only(utkface):
    import cv2

    from agevision.training.augment import _compress

    image = cv2.imread(str(sorted(utkface.glob("30_1_0_*"))[0]))  # a 30-year-old woman, 200x200
    face = cv2.resize(image, (112, 112), interpolation=cv2.INTER_AREA)[:, :, ::-1]  # RGB
    x = torch.from_numpy(np.stack([face, face]).copy()).permute(0, 3, 1, 2).float()
    y = _compress(x, torch.tensor([True, False]), torch.tensor([0.1, 0.1]))
    assert y.shape == x.shape and torch.equal(y[1], x[1])  # only the chosen face is touched
    assert torch.equal(y[0], y[0].round()) and 0 <= float(y.min()) and float(y.max()) <= 255
    changed = float((y[0] - x[0]).abs().mean())
    assert 1.5 < changed < 20, changed  # the same face, degraded
    harder = _compress(x, torch.tensor([True, False]), torch.tensor([0.95, 0.0]))[0]  # JPEG quality 17
    milder = _compress(x, torch.tensor([True, False]), torch.tensor([0.55, 0.0]))[0]  # quality 35
    assert float((harder - x[0]).abs().mean()) > float((milder - x[0]).abs().mean())


def _faces_batch(utkface, n=8):
    import cv2

    files = sorted(utkface.glob("*.jpg"))[:: 997][:n]
    faces = [cv2.resize(cv2.imread(str(f)), (112, 112), interpolation=cv2.INTER_AREA)[:, :, ::-1] for f in files]
    return torch.from_numpy(np.stack(faces).copy()).permute(0, 3, 1, 2).float()


def test_wild_augmentation_changes_faces_within_range_and_is_reproducible(utkface):
    x = _faces_batch(utkface)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)  # same seed, same faces
    assert 0 <= float(a.min()) and float(a.max()) <= 255
    assert float((a - x).abs().mean()) > 10  # changed
    none = AugmentConfig(flip=0, rotate=0, zoom_out=0, zoom_in=0, shift=0, turn=0, lose_resolution=0, light=0,
                         occlude=0, noise=0, gray=0, compress=0)
    kept = augment(x, torch.Generator().manual_seed(3), none)
    jitter = float((kept - x).abs().mean())  # only the brightness (+-25) and contrast (+-25%) jitter left
    assert jitter < 25 and float((a - x).abs().mean()) > jitter


def test_each_wild_change_does_what_it_says(utkface):
    from agevision.training.augment import _light, _noise, _occlude, _warp

    x = _faces_batch(utkface, 4)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    chosen = torch.tensor([True, False, True, False])
    for change in (_light, _occlude):
        y = change(x, chosen, rand)
        assert torch.equal(y[~chosen], x[~chosen]) and not torch.equal(y[chosen], x[chosen]), change.__name__
    y = _noise(x, chosen, rand, gen)
    assert torch.equal(y[~chosen], x[~chosen]) and float((y[chosen] - x[chosen]).std()) > 1.5
    lit = _light(x, torch.ones(4, dtype=torch.bool), rand)
    assert float(lit.mean()) < float(x.mean())  # relit faces are darker on the whole (dim, shadows, backlight)
    turned = _warp(x, AugmentConfig(flip=0, rotate=0, zoom_out=0, zoom_in=0, shift=0, turn=1.0), rand)
    plain = _warp(x, AugmentConfig(flip=0, rotate=0, zoom_out=0, zoom_in=0, shift=0, turn=0.0), rand)
    assert float((plain - x).abs().mean()) < 0.5  # the identity warp
    assert float((turned - x).abs().mean()) > 3  # out of plane


def test_balanced_draws_weigh_every_group_alike():
    ages = np.array([30] * 90 + [70] * 10)
    genders = np.zeros(100, np.int64)
    races = np.zeros(100, np.int64)
    w = sample_weights(ages, genders, races, np.zeros(100), balance=1.0, turned_boost=0.0).numpy()
    assert w[:90].sum() == pytest.approx(w[90:].sum())  # two groups, drawn alike
    half = sample_weights(ages, genders, races, np.zeros(100), balance=0.0, turned_boost=1.0).numpy()
    assert np.allclose(half, 1.0)
    turned = np.zeros(100)
    turned[0] = 1.0
    t = sample_weights(ages, genders, races, turned, balance=0.0, turned_boost=1.0).numpy()
    assert t[0] == pytest.approx(2 * t[1])


def test_a_changed_recipe_does_not_resume_an_old_checkpoint(utkface):
    from agevision.training.train import _config_key

    cfg = TrainConfig(data_dir=utkface)
    assert _config_key(cfg, 10) == _config_key(TrainConfig(data_dir=utkface, device="cpu", out_dir=Path("x")), 10)
    for changed in (TrainConfig(data_dir=utkface, weight_decay=1e-3), TrainConfig(data_dir=utkface, imagenet=Path("y")),
                    TrainConfig(data_dir=utkface, augment=AugmentConfig(light=0.1))):
        assert _config_key(changed, 10) != _config_key(cfg, 10)
    taught = TrainConfig(data_dir=utkface, teacher=Path("weights"))
    assert len({_config_key(taught, 10, "a" * 64), _config_key(taught, 10, "b" * 64), _config_key(cfg, 10)}) == 3
    assert _config_key(TrainConfig(data_dir=utkface, init=Path("w"), keep_gender=True), 10) != _config_key(cfg, 10)
    assert _config_key(TrainConfig(data_dir=utkface, mirror_fill=0.5), 10) != _config_key(cfg, 10)


def test_mirror_fill_draws_that_share_of_the_training_crops_from_the_mirrored_ones(utkface):
    from types import SimpleNamespace

    from agevision.training.train import _train_crops

    n = 400
    data = SimpleNamespace(crops=np.zeros((n, 4, 4, 3), np.uint8), mirrored=np.ones((n, 4, 4, 3), np.uint8))
    idx = np.arange(n)
    gen = torch.Generator().manual_seed(0)
    assert _train_crops(data, idx, 0.0, gen).max() == 0
    assert _train_crops(data, idx, 1.0, gen).min() == 1
    mixed = _train_crops(data, idx, 0.5, gen)
    assert (mixed.min(axis=(1, 2, 3)) == mixed.max(axis=(1, 2, 3))).all()  # each face whole from one or the other
    assert 0.4 < mixed[:, 0, 0, 0].mean() < 0.6
    assert _train_crops(SimpleNamespace(crops=data.crops, mirrored=None), idx, 0.5, gen).max() == 0
    with pytest.raises(AgevisionError, match="mirror-fill"):
        TrainConfig(data_dir=utkface, mirror_fill=1.5)


def test_fine_tuning_starts_from_the_given_weights(tiny_run, tmp_path: Path):
    from dataclasses import replace

    cfg, _ = tiny_run
    tuned = replace(cfg, out_dir=tmp_path / "tuned", checkpoint=tmp_path / "ckpt.pt", imagenet=None,
                    init=cfg.out_dir, epochs=1)
    card = train(tuned, Console(quiet=True))
    assert card["config"]["init"] == str(cfg.out_dir)
    start, _ = weights.load(cfg.out_dir)
    end, _ = weights.load(tuned.out_dir)
    frozen = [k for k in start.state_dict() if k.startswith("features.0.") and "weight" in k]
    assert frozen and all(torch.equal(start.state_dict()[k], end.state_dict()[k]) for k in frozen)
    head = "head.weight" if "head.weight" in start.state_dict() else sorted(start.state_dict())[-2]
    assert not torch.equal(start.state_dict()[head], end.state_dict()[head])  # and it did train
    with pytest.raises(AgevisionError, match="another input size"):
        train(replace(tuned, input_size=112, out_dir=tmp_path / "x", checkpoint=tmp_path / "x.pt"),
              Console(quiet=True))


def test_calibration_finds_the_temperatures_that_hold():
    """Faces whose true ages spread twice as widely as the model's distributions say need an
    age temperature of about 2 for their 80% intervals to hold; genders drawn at
    P(female) = sigmoid(z / 1.5) give a gender temperature of about 1.5."""
    from agevision.training import calibration

    rng = np.random.default_rng(0)
    bins = np.arange(101, dtype=np.float64)
    centres = rng.uniform(20, 70, 4000)
    logits = -((bins[None, :] - centres[:, None]) ** 2) / (2 * 4.0**2)  # N(centre, 4^2) at temperature 1
    ages = centres + rng.normal(0, 4.0 * np.sqrt(2.0), len(centres))  # variance 2 x 4^2: temperature 2
    assert abs(calibration.fit_age(logits, ages) - 2.0) < 0.15
    assert abs(calibration.fit_age(logits, centres + rng.normal(0, 4.0, len(centres))) - 1.0) < 0.08
    z = rng.normal(0, 4, 20000)
    genders = (rng.uniform(size=len(z)) < 1 / (1 + np.exp(-z / 1.5))).astype(int)
    assert abs(calibration.fit_gender(z, genders) - 1.5) < 0.12
    assert calibration.fit(logits[:0], z[:0], ages[:0], genders[:0]) == (1.0, 1.0)


def test_the_augmentation_is_changed_by_name_and_bad_changes_are_refused(tmp_path):
    from typer.testing import CliRunner

    from agevision.cli import app
    from agevision.training.augment import changed_config

    assert changed_config("") == AugmentConfig()
    cfg = changed_config(" noise=0.4, turn=0 ,rotate=10")
    assert (cfg.noise, cfg.turn, cfg.rotate, cfg.light) == (0.4, 0.0, 10.0, AugmentConfig().light)
    for bad, says in (("nois=0.4", "is not NAME=NUMBER"), ("noise", "is not NAME=NUMBER"), ("noise=x", "not a number"),
                      ("noise=2", "from 0 to 1"), ("rotate=-1", "from 0 to 90")):
        with pytest.raises(ValueError, match=says):
            changed_config(bad)
    out = tmp_path / "w"
    r = CliRunner().invoke(app, ["train", "--augment", "nois=0.4", "--out", str(out)])
    assert r.exit_code == 1 and "error: --augment: 'nois=0.4'" in r.output and not out.exists()


def test_a_teacher_s_reading_is_mixed_into_the_gender_targets(tiny_run, tmp_path: Path):
    from dataclasses import replace

    from typer.testing import CliRunner

    from agevision.cli import app
    from agevision.training.teacher import gender_targets
    from agevision.training.train import _load_data

    assert gender_targets(np.array([1, 0]), None, 0.5).tolist() == [1.0, 0.0]
    assert np.allclose(gender_targets(np.array([1, 0]), np.array([0.2, 0.9]), 0.25), [0.8, 0.225])
    cfg, _ = tiny_run
    taught = replace(cfg, teacher=cfg.out_dir, teacher_weight=0.5)
    data = _load_data(taught, Console(quiet=True))
    read = Estimator(cfg.out_dir, device="cpu").predict_many(data.train.crops).p_female
    assert np.allclose(data.gender_targets, 0.5 * data.train.genders + 0.5 * read, atol=1e-5)
    assert data.teacher_sha256 == weights.load_card(cfg.out_dir).tensors_sha256
    assert np.array_equal(_load_data(cfg, Console(quiet=True)).gender_targets, data.train.genders)
    out = tmp_path / "w"  # the tiny weights take 96 px crops: refused before any work
    r = CliRunner().invoke(app, ["train", "--teacher", str(cfg.out_dir), "--out", str(out)])
    assert r.exit_code == 1 and "--teacher" in r.output and "96 px" in r.output and not out.exists()
    r = CliRunner().invoke(app, ["train", "--teacher", str(cfg.out_dir), "--input-size", "96", "--crop", "wide",
                                 "--out", str(out)])  # the teacher reads tight crops: it would misread wide ones
    assert r.exit_code == 1 and "placed otherwise" in " ".join(r.output.split()) and not out.exists()


def test_several_teachers_teach_their_mean_reading_of_gender_and_age(tiny_run, tmp_path: Path):
    from dataclasses import replace

    from typer.testing import CliRunner

    from agevision.cli import app
    from agevision.training.train import _config_key, _load_data

    cfg, _ = tiny_run
    model, card = weights.load(cfg.out_dir)
    with torch.no_grad():  # a second teacher that reads otherwise: older, and more often female
        model.head.bias[:-1] += torch.linspace(-2, 2, model.head.bias.numel() - 1)
        model.head.bias[-1] += 1.5
    weights.save(model, card, tmp_path / "other")
    taught = replace(cfg, teacher=(cfg.out_dir, tmp_path / "other"), teacher_weight=0.5, teacher_age_weight=0.25)
    data = _load_data(taught, Console(quiet=True))
    reads = [Estimator(d, device="cpu", flip=False).predict_many(data.train.crops) for d in taught.teacher]
    mean_p = (reads[0].p_female + reads[1].p_female) / 2
    assert not np.allclose(reads[0].p_female, reads[1].p_female, atol=0.05)
    assert np.allclose(data.gender_targets, 0.5 * data.train.genders + 0.5 * mean_p, atol=1e-5)
    assert np.allclose(data.age_soft, (reads[0].age_probs + reads[1].age_probs) / 2, atol=1e-5)
    assert data.teacher_sha256 == ",".join(weights.load_card(d).tensors_sha256 for d in taught.teacher)
    assert _load_data(replace(taught, teacher_age_weight=0.0), Console(quiet=True)).age_soft is None
    key = _config_key(taught, 10, data.teacher_sha256)
    assert key != _config_key(replace(taught, teacher_age_weight=0.5), 10, data.teacher_sha256)
    assert key != _config_key(taught, 10, data.teacher_sha256.split(",")[0])
    with pytest.raises(AgevisionError, match="needs a --teacher"):
        TrainConfig(data_dir=cfg.data_dir, teacher_age_weight=0.5)
    out = tmp_path / "w"  # each teacher is checked before any work
    r = CliRunner().invoke(app, ["train", "--teacher", str(cfg.out_dir), "--teacher", str(tmp_path / "none"),
                                 "--input-size", "96", "--out", str(out)])
    assert r.exit_code == 1 and "none" in r.output and "Traceback" not in r.output and not out.exists()


def test_a_teacher_s_age_distribution_makes_up_its_share_of_the_age_target():
    from agevision.training.losses import age_loss

    bins = torch.arange(101, dtype=torch.float32)
    logits, ages = torch.randn(4, 101), torch.tensor([3, 25, 40, 70])
    own = torch.softmax(logits, dim=1)
    plain = age_loss(logits, ages, bins, 0.0)
    assert torch.allclose(age_loss(logits, ages, bins, 0.0, own, 0.0), plain)
    assert float(age_loss(logits, ages, bins, 0.0, own, 1.0)) == pytest.approx(0.0, abs=1e-5)  # its own reading
    half = age_loss(logits, ages, bins, 0.0, own, 0.5)
    assert 0 < float(half) < float(plain)


def test_an_age_head_refit_changes_the_age_rows_only(tiny_run, tmp_path: Path):
    from dataclasses import replace

    from typer.testing import CliRunner

    from agevision.cli import app
    from agevision.training.head_refit import refit
    from agevision.training.train import _load_data, predict_logits

    cfg, _ = tiny_run
    card = refit(replace(cfg, init=cfg.out_dir, out_dir=tmp_path / "aged", epochs=2), Console(quiet=True))
    (start, start_card), (end, end_card) = weights.load(cfg.out_dir), weights.load(tmp_path / "aged")
    before, after = start.state_dict(), end.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("head."))
    for name in ("head.weight", "head.bias"):
        assert torch.equal(before[name][-1], after[name][-1])  # the gender row
        assert not torch.equal(before[name][:-1], after[name][:-1])  # the age rows did train
    assert (end_card.gender_temperature, end_card.gender_ensemble) == (start_card.gender_temperature,
                                                                       start_card.gender_ensemble)
    refit_info = card["age_head_refit"]
    assert refit_info["from_tensors_sha256"] == start_card.tensors_sha256 and refit_info["copies"] == 2
    assert refit_info["losses"][-1] < refit_info["losses"][0]
    crops = _load_data(cfg, Console(quiet=True)).val.crops
    (a0, g0), (a1, g1) = (predict_logits(m, crops, torch.device("cpu"), start_card) for m in (start, end))
    assert np.array_equal(g0, g1) and not np.array_equal(a0, a1)
    out = tmp_path / "w"
    for args, says in ((["--age-head-only"], "--init"),
                       (["--age-head-only", "--init", str(cfg.out_dir), "--input-size", "96", "--teacher",
                         str(cfg.out_dir)], "--teacher")):
        r = CliRunner().invoke(app, ["train", *args, "--out", str(out)])
        assert r.exit_code == 1 and says in r.output and not out.exists(), r.output


def test_a_gender_head_refit_changes_the_gender_row_only_and_follows_its_targets(tiny_run, tmp_path: Path):
    from dataclasses import replace

    import torch.nn.functional as F
    from typer.testing import CliRunner

    from agevision.cli import app
    from agevision.training.head_refit import features, refit
    from agevision.training.train import _load_data, predict_logits

    cfg, _ = tiny_run
    taught = replace(cfg, init=cfg.out_dir, out_dir=tmp_path / "gendered", epochs=2, teacher=(cfg.out_dir,),
                     teacher_weight=0.5)
    card = refit(taught, Console(quiet=True), "gender")
    (start, start_card), (end, end_card) = weights.load(cfg.out_dir), weights.load(taught.out_dir)
    before, after = start.state_dict(), end.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("head."))
    for name in ("head.weight", "head.bias"):
        assert torch.equal(before[name][:-1], after[name][:-1])  # the age rows
        assert not torch.equal(before[name][-1], after[name][-1])  # the gender row did train
    assert end_card.age_temperature == start_card.age_temperature
    assert end_card.gender_ensemble is not None and "gender_ensemble_fit" in card
    info = card["gender_head_refit"]
    assert info["from_tensors_sha256"] == start_card.tensors_sha256 and info["copies"] == 2
    assert info["teacher_tensors_sha256"] == start_card.tensors_sha256
    assert info["gender_temperature_was"] == start_card.gender_temperature
    data = _load_data(replace(taught, out_dir=cfg.out_dir), Console(quiet=True))
    crops = data.val.crops
    (a0, g0), (a1, g1) = (predict_logits(m, crops, torch.device("cpu"), start_card) for m in (start, end))
    assert np.array_equal(a0, a1) and not np.array_equal(g0, g1)
    # on the training faces as they are, the new row is nearer the label/teacher targets than the old
    feats = features(start, data.train.crops, start_card, torch.device("cpu"))
    targets = torch.from_numpy(data.gender_targets).float()
    with torch.no_grad():
        bce = [float(F.binary_cross_entropy_with_logits(feats @ net.head.weight[-1] + net.head.bias[-1], targets))
               for net in (start, end)]
    assert bce[1] < bce[0], bce
    out = tmp_path / "w"
    init = ["--init", str(cfg.out_dir), "--input-size", "96"]
    for args, says in ((["--gender-head-only"], "--init"),
                       (["--gender-head-only", "--age-head-only", *init], "pass one"),
                       (["--gender-head-only", *init, "--teacher", str(cfg.out_dir), "--teacher-age-weight",
                         "0.5"], "--teacher-age-weight"),
                       (["--gender-head-only", *init, "--crop", "wide", "--teacher", str(tmp_path / "none")],
                        "none")):
        r = CliRunner().invoke(app, ["train", *args, "--out", str(out)])
        assert r.exit_code == 1 and says in r.output and "Traceback" not in r.output and not out.exists(), r.output


def test_keep_gender_takes_the_init_network_s_reading_of_each_augmented_face_as_the_target(
        tiny_run, tmp_path: Path, monkeypatch):
    from dataclasses import replace

    from typer.testing import CliRunner

    import agevision.training.train as train_mod
    from agevision.cli import app
    from agevision.model.net import split_logits

    cfg, _ = tiny_run
    seen = {"x": [], "targets": []}
    real_augment, real_loss = train_mod.augment, train_mod.loss_terms

    def augment(*args, **kwargs):
        seen["x"].append(real_augment(*args, **kwargs))
        return seen["x"][-1]

    def loss_terms(age_logits, gender_logit, ages, genders, *args, **kwargs):
        seen["targets"].append(genders.detach().clone())
        return real_loss(age_logits, gender_logit, ages, genders, *args, **kwargs)

    monkeypatch.setattr(train_mod, "augment", augment)
    monkeypatch.setattr(train_mod, "loss_terms", loss_terms)
    run = replace(cfg, init=cfg.out_dir, imagenet=None, epochs=1, keep_gender=True, calib_augmented=0,
                  out_dir=tmp_path / "kept", checkpoint=tmp_path / "c.pt")
    card = train(run, Console(quiet=True))
    assert card["config"]["keep_gender"] is True
    init, init_card = weights.load(cfg.out_dir)
    with torch.no_grad():
        expected = torch.sigmoid(split_logits(init(train_mod._normalise(seen["x"][0], init_card)))[1])
    assert torch.allclose(seen["targets"][0], expected, atol=1e-4)
    assert not torch.all((seen["targets"][0] == 0) | (seen["targets"][0] == 1))  # not the labels
    out = tmp_path / "x"
    r = CliRunner().invoke(app, ["train", "--keep-gender", "--out", str(out)])
    assert r.exit_code == 1 and "--init" in r.output and not out.exists()


def test_the_card_says_where_the_face_sits_in_the_crop(tiny_run):
    from agevision.align import TIGHT
    from agevision.model.card import CropGeometry, ModelCard

    cfg, card = tiny_run
    assert card["crop"] == {"box_fraction": TIGHT.box_fraction, "center": list(TIGHT.center)}
    assert Estimator(cfg.out_dir, device="cpu").card.crop == TIGHT
    shipped = weights.load_card(None).to_dict()
    assert ModelCard.from_dict({k: v for k, v in shipped.items() if k != "crop"}).crop == CropGeometry()
    for bad in ({"box_fraction": 0, "center": [0.5, 0.5]}, {"box_fraction": 1.0, "center": [0.5]},
                {"box_fraction": True, "center": [0.5, 0.5]}, [1, 2]):
        with pytest.raises(AgevisionError, match="crop"):
            ModelCard.from_dict({**shipped, "crop": bad})


def test_the_estimator_crops_faces_as_its_card_says(tiny_run, utkface):
    import cv2

    from agevision.align import align_crops
    from agevision.detect import FaceDetector
    from agevision.training.crops import pad_for_detection
    from tests.conftest import pick

    cfg, _ = tiny_run
    est = Estimator(cfg.out_dir, device="cpu")
    frame, _, _ = pad_for_detection(cv2.imread(str(pick(utkface, "40_0_")[0])))
    with FaceDetector("full") as det:
        faces = det.detect(frame)
    faces.readable = np.ones(len(faces), bool)
    got = est.estimate(frame, faces)
    tight = est.predict(align_crops(frame, faces, est.input_size, est.card.denoise, est.card.crop))
    wide = est.predict(align_crops(frame, faces, est.input_size, est.card.denoise))
    assert np.allclose(got.age, tight.age) and not np.allclose(got.age, wide.age)


def test_an_ensemble_reads_the_mean_of_its_members_age_distributions_and_p_female():
    from agevision.model.decode import decode, mean_prediction

    bins = np.arange(101, dtype=np.float64)
    young = decode(-((bins[None, :] - 20.0) ** 2) / 18, np.array([3.0]), 1.0, 1.0)
    old = decode(-((bins[None, :] - 60.0) ** 2) / 18, np.array([-3.0]), 1.0, 1.0)
    both = mean_prediction([young, old], bins)
    assert both.p_female[0] == pytest.approx(0.5, abs=1e-6)
    assert both.age[0] == pytest.approx(40.0, abs=0.01)  # the mean of the two expected ages
    assert both.age_low[0] < 25 and both.age_high[0] > 55  # two modes: an interval that spans them
    assert np.allclose(both.age_probs.sum(axis=1), 1.0, atol=1e-5)
    alone = mean_prediction([young], bins)
    assert np.allclose(alone.age, young.age) and np.allclose(alone.age_probs, young.age_probs, atol=1e-6)


def test_a_reading_shows_the_median_or_the_mean_of_its_age_distribution():
    from agevision.model.decode import summarize_distribution

    bins = np.arange(101, dtype=np.float64)
    skewed = np.zeros((1, 101))
    skewed[0, 20], skewed[0, 60] = 0.6, 0.4  # most of it at 20, a tail at 60
    mean, low, high = summarize_distribution(skewed, bins, "mean")
    median = summarize_distribution(skewed, bins, "median")[0]
    assert mean[0] == pytest.approx(36.0) and 19.5 <= median[0] <= 20.5
    assert low[0] <= median[0] <= high[0]
    flat = np.full((1, 101), 1 / 101)
    assert summarize_distribution(flat, bins, "median")[0][0] == pytest.approx(50.0, abs=0.01)
    with pytest.raises(ValueError, match="age point"):
        summarize_distribution(flat, bins, "mode")
