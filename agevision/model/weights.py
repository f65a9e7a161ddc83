"""Weights files: safetensors tensors plus a JSON card with everything needed to use them.

`weights/agegender.safetensors` holds the network's state dict; `weights/agegender.json`
(the model card, `card.ModelCard`, with a checksum of the tensors) holds the architecture
name, input size, normalisation, age bins, calibration temperatures, training data and
split, validation metrics and the command that produced the weights. Loading is strict and never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agevision.defaults import WEIGHTS_DIR as DEFAULT_DIR
from agevision.errors import AgevisionError
from agevision.model.card import ARCHITECTURE, ModelCard

if TYPE_CHECKING:
    from agevision.model.net import AgeGenderNet

STEM = "agegender"
MAX_CARD_BYTES = 1_000_000  # the shipped card is under 20 kB; anything far larger is not a card


def paths(directory: Path | None = None) -> tuple[Path, Path]:
    """(safetensors path, card path) inside `directory` (default: the shipped weights/)."""
    directory = Path(directory) if directory else DEFAULT_DIR
    return directory / f"{STEM}.safetensors", directory / f"{STEM}.json"


def tensors_digest(state: dict) -> str:
    """sha256 (hex) over a state dict's tensors: names, dtypes, shapes and bytes, in name order."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(model: AgeGenderNet, card: ModelCard | dict, directory: Path) -> ModelCard:
    """Write the model's state dict and its card (with the tensors' checksum) into `directory`
    (created if needed), each through a temporary file; returns the card as written."""
    from safetensors.torch import save as save_bytes

    from agevision.files import write_atomic

    tensor_path = paths(directory)[0]
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    card = ModelCard.from_dict(card.to_dict() if isinstance(card, ModelCard) else card)
    card = replace(card, tensors_sha256=tensors_digest(state))
    write_atomic(tensor_path, save_bytes(state, metadata={"architecture": ARCHITECTURE}))
    write_card(card, directory)
    return card


def write_card(card: ModelCard, directory: Path | None = None) -> Path:
    """Write `card` as the card of the weights in `directory` (through a temporary file);
    returns its path. The tensors are not touched: their checksum must still match."""
    from agevision.files import write_atomic

    card_path = paths(directory)[1]
    write_atomic(card_path, json.dumps(card.to_dict(), indent=2) + "\n")
    return card_path


def files_digest(directory: Path | None = None) -> str:
    """sha256 of the weights file and the card together: what a cached traced model is of."""
    import hashlib

    h = hashlib.sha256()
    for path in paths(directory):
        try:
            h.update(path.read_bytes())
        except OSError as err:
            raise AgevisionError(f"cannot read {path}: {err.strerror}") from None
    return h.hexdigest()


def load_card(directory: Path | None = None) -> ModelCard:
    """Read and check the model card. Raises AgevisionError if missing or malformed."""
    _, card_path = paths(directory)
    if card_path.parent.exists() and not card_path.parent.is_dir():
        raise AgevisionError(f"{card_path.parent} is not a weights folder (it is a file)")
    if card_path.exists() and not card_path.is_file():  # a folder, a FIFO, a device
        raise AgevisionError(f"model card {card_path} is not a plain file")
    try:
        with open(card_path, "rb") as f:
            text = f.read(MAX_CARD_BYTES + 1)
        if len(text) > MAX_CARD_BYTES:
            raise AgevisionError(f"model card {card_path} is over {MAX_CARD_BYTES // 1_000_000} MB: not a model card")
        raw = json.loads(text.decode("utf-8"))
    except FileNotFoundError:
        raise AgevisionError(f"model card missing: {card_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AgevisionError(f"model card {card_path} is not valid JSON: {err}") from None
    except OSError as err:
        raise AgevisionError(f"model card {card_path} cannot be read: {err.strerror or err}") from None
    return ModelCard.from_dict(raw, f"model card {card_path}")


def load(directory: Path | None = None) -> tuple[AgeGenderNet, ModelCard]:
    """Build the network and load its weights strictly; returns (model in eval mode, card).

    Raises AgevisionError when a file is missing, corrupt (its tensors' checksum differs from
    the card's), or does not match the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from agevision.model.net import AgeGenderNet  # torchvision: only when the network is built

    card = load_card(directory)
    tensor_path, _ = paths(directory)
    if not tensor_path.is_file():
        raise AgevisionError(f"weights file missing: {tensor_path}")
    try:
        state = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AgevisionError(f"weights file {tensor_path} is corrupt: {err}") from None
    model = AgeGenderNet(num_age_bins=len(card.age_bins))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise AgevisionError(f"weights file {tensor_path} does not match {ARCHITECTURE}: {first}") from None
    if card.tensors_sha256 is not None and tensors_digest(state) != card.tensors_sha256:
        raise AgevisionError(f"weights file {tensor_path} is corrupt: its tensors' checksum differs from the card's "
                             "(reinstall agevision, or retrain)")
    return model.eval(), card
