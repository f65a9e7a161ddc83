"""Weights files: safetensors tensors plus a JSON card with everything needed to use them.

`weights/agegender.safetensors` holds the network's state dict; `weights/agegender.json`
(the model card) holds the architecture name, input size, normalisation, age bins,
calibration temperatures, training data and split, validation metrics and the command
that produced the weights. Loading is strict and never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from agevision.defaults import WEIGHTS_DIR as DEFAULT_DIR
from agevision.errors import AgevisionError
from agevision.model.net import ARCHITECTURE, AgeGenderNet

STEM = "agegender"
REQUIRED_CARD_KEYS = ("architecture", "input_size", "mean", "std", "age_bins")


def paths(directory: Path | None = None) -> tuple[Path, Path]:
    """(safetensors path, card path) inside `directory` (default: the shipped weights/)."""
    directory = Path(directory) if directory else DEFAULT_DIR
    return directory / f"{STEM}.safetensors", directory / f"{STEM}.json"


def save(model: AgeGenderNet, card: dict, directory: Path) -> None:
    """Write the model's state dict and its card into `directory` (created if needed)."""
    from safetensors.torch import save_file

    tensor_path, card_path = paths(directory)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tensor_path), metadata={"architecture": ARCHITECTURE})
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def load_card(directory: Path | None = None) -> dict:
    """Read and check the model card. Raises AgevisionError if missing or malformed."""
    _, card_path = paths(directory)
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise AgevisionError(f"model card missing: {card_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AgevisionError(f"model card {card_path} is not valid JSON: {err}") from None
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise AgevisionError(f"model card {card_path} lacks {', '.join(missing)}")
    if card["architecture"] != ARCHITECTURE:
        raise AgevisionError(f"model card {card_path} names architecture {card['architecture']!r}, "
                             f"this agevision knows {ARCHITECTURE!r}")
    return card


def load(directory: Path | None = None) -> tuple[AgeGenderNet, dict]:
    """Build the network and load its weights strictly; returns (model in eval mode, card).

    Raises AgevisionError when a file is missing, corrupt, or does not match the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card = load_card(directory)
    tensor_path, _ = paths(directory)
    if not tensor_path.is_file():
        raise AgevisionError(f"weights file missing: {tensor_path}")
    try:
        state = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AgevisionError(f"weights file {tensor_path} is corrupt: {err}") from None
    model = AgeGenderNet(num_age_bins=len(card["age_bins"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise AgevisionError(f"weights file {tensor_path} does not match {ARCHITECTURE}: {first}") from None
    return model.eval(), card
