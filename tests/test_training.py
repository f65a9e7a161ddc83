from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.estimator import Estimator
from agevision.model.net import AgeGenderNet
from agevision.training.losses import age_targets
from agevision.training.train import TrainConfig, train
from tests.conftest import DUPLICATES, IMAGENET


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, utkface):
    tmp = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(data_dir=utkface, out_dir=tmp / "weights", duplicates=DUPLICATES, imagenet=IMAGENET,
                      cache_dir=tmp / "cache", checkpoint=tmp / "ckpt.pt", limit=96, epochs=4, batch_size=16,
                      lr=1e-3, input_size=96, l1_weight=0.05, ema_decay=0.0, device="cpu")
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
    cfg, card = tiny_run
    again = train(cfg, Console(quiet=True))  # resume=True: all epochs are done, nothing to train
    assert again["history"] == card["history"]


def test_trained_weights_load_into_the_estimator(tiny_run):
    cfg, _ = tiny_run
    est = Estimator(cfg.out_dir, device="cpu")
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
