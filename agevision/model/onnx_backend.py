"""The ONNX Runtime runner of the age and gender network (CPU), and the ONNX export.

An export is `agegender.onnx` beside the weights with `agegender.onnx.json`: the sha256 of
the ONNX file, the `tensors_sha256` of the weights it was exported from, the opset, the
input size and the largest difference from PyTorch measured at export. An export is used
only when both checksums match (`matching_export`): weights retrained since are run by
PyTorch until exported again (`agevision export`). No torch here, except in `export`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.card import ModelCard

ONNX_NAME = "agegender.onnx"
OPSET = 17  # ONNX Runtime 1.17 and later run it


def sidecar(path: Path) -> Path:
    """The description file of an export: NAME.onnx.json beside NAME.onnx."""
    return path.with_name(path.name + ".json")


def available() -> bool:
    """Whether ONNX Runtime is installed."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _why_not(path: Path, card: ModelCard) -> str | None:
    """None if `path` is an export of the weights the card describes, else why not."""
    if not path.is_file():
        return f"no ONNX export at {path}"
    try:
        about = json.loads(sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{sidecar(path)} is missing or not JSON"
    if not card.tensors_sha256 or about.get("tensors_sha256") != card.tensors_sha256:
        return f"{path} was exported from other weights (run agevision export again)"
    if about.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
        return f"{path} is corrupt: its checksum differs from {sidecar(path).name}'s"
    if about.get("input_size") != card.input_size:
        return f"{path} takes {about.get('input_size')} px crops, the card {card.input_size}"
    return None


def matching_export(weights_dir: Path | None, card: ModelCard) -> Path | None:
    """The weights folder's ONNX export if it is of these weights, else None."""
    path = weights.paths(weights_dir)[0].with_name(ONNX_NAME)
    return path if _why_not(path, card) is None else None


def checked_export(weights_dir: Path | None, card: ModelCard) -> Path:
    """The weights folder's ONNX export; AgevisionError saying why it cannot be used."""
    if not available():
        raise AgevisionError("--backend onnx needs ONNX Runtime: pip install onnxruntime")
    path = weights.paths(weights_dir)[0].with_name(ONNX_NAME)
    why = _why_not(path, card)
    if why is not None:
        raise AgevisionError(f"--backend onnx: {why}")
    return path


class _Cpu:
    """What `Estimator.device` is on this backend (`.type` as torch.device has it)."""

    type = "cpu"

    def __str__(self) -> str:
        return "cpu"


class OnnxRunner:
    """The exported network in ONNX Runtime on the CPU. threads: intra-op threads (default:
    half the cores, at least one, leaving the rest to the video and detector threads)."""

    backend = "onnx"
    device = _Cpu()

    def __init__(self, path: Path, card: ModelCard, threads: int | None = None) -> None:
        self.path = Path(path)
        self._mean = (np.asarray(card.mean, np.float32) * 255).reshape(1, 3, 1, 1)
        self._std = (np.asarray(card.std, np.float32) * 255).reshape(1, 3, 1, 1)
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)
        self._session = self._open(self.threads)

    def _open(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are not for users
        try:
            session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise AgevisionError(f"cannot load {self.path}: {str(err).splitlines()[0]}") from None
        self._input = session.get_inputs()[0].name
        return session

    def logits(self, crops_rgb: np.ndarray, flip: bool = False) -> np.ndarray:
        """(N, K + 1) logits of (N, S, S, 3) uint8 RGB crops; flip: averaged with the mirrored crops'."""
        x = (np.ascontiguousarray(crops_rgb).transpose(0, 3, 1, 2).astype(np.float32) - self._mean) / self._std
        if flip:
            x = np.concatenate([x, x[..., ::-1]])
        out = self._session.run(None, {self._input: np.ascontiguousarray(x)})[0]
        if flip:
            out = (out[: len(crops_rgb)] + out[len(crops_rgb):]) / 2
        return out.astype(np.float32, copy=False)

    def set_threads(self, n: int) -> int:
        if n != self.threads:
            self.threads = n
            self._session = self._open(n)
        return self.threads


def export(weights_dir: Path | None, target: Path, check_crops: np.ndarray, opset: int = OPSET) -> dict:
    """Export the weights to ONNX at `target` (dynamic batch, the card's input size), with its
    description beside it; both written through temporary files. check_crops: (N, S, S, 3)
    uint8 RGB crops run through PyTorch and ONNX Runtime to compare. Returns the
    description (with `max_abs_diff`). Needs torch and the `onnx` package."""
    import io
    import warnings

    import torch

    from agevision.files import write_atomic

    model, card = weights.load(weights_dir)
    size = card.input_size
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.zeros(1, 3, size, size), buf, opset_version=opset, input_names=["crops"],
                              output_names=["logits"], dynamic_axes={"crops": {0: "n"}, "logits": {0: "n"}},
                              dynamo=False)
    except Exception as err:  # noqa: BLE001 - the exporter raises many kinds
        hint = " (pip install 'agevision[export]')" if "onnx" in str(err).lower() and "install" in str(err) else ""
        raise AgevisionError(f"ONNX export failed: {str(err).splitlines()[0]}{hint}") from None
    data = buf.getvalue()
    about = {"tensors_sha256": card.tensors_sha256, "sha256": hashlib.sha256(data).hexdigest(), "opset": opset,
             "input_size": size, "torch": torch.__version__}
    write_atomic(target, data)
    runner = OnnxRunner(target, card)
    mean = torch.tensor(card.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(card.std).view(1, 3, 1, 1) * 255
    with torch.inference_mode():
        x = (torch.from_numpy(np.ascontiguousarray(check_crops)).permute(0, 3, 1, 2).float() - mean) / std
        reference = model(x).numpy()
    about["max_abs_diff"] = float(np.abs(runner.logits(check_crops) - reference).max())
    about["checked_on"] = len(check_crops)
    write_atomic(sidecar(target), json.dumps(about, indent=1))
    return about
