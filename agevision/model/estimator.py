"""Estimator: shipped weights in, age and gender of a batch of aligned face crops out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agevision import align
from agevision.errors import AgevisionError
from agevision.faces import Faces
from agevision.labels import gender_labels
from agevision.model import weights
from agevision.model.decode import Prediction, decode
from agevision.model.net import fuse_batchnorm, split_logits


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given ("cpu", "cuda", "cuda:1"), else CUDA when available, else CPU.

    Raises AgevisionError if CUDA is asked for and not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AgevisionError("--device cuda asked for, but no CUDA GPU is available to PyTorch")
    return dev


def _optimise_for_cpu(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """A frozen TorchScript trace of `model` (oneDNN-friendly, about 2x faster on the CPU);
    `model` itself if tracing fails."""
    import warnings

    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            example = torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last)
            traced = torch.jit.optimize_for_inference(torch.jit.trace(model, example))
            traced(torch.zeros(2, 3, size, size))  # other batch sizes run too
            return traced
    except Exception:  # noqa: BLE001 - eager mode is always a correct fallback
        return model


class Estimator:
    """Batched age and gender estimation with the shipped (or given) weights.

    weights_dir: folder with agegender.safetensors and agegender.json (default weights/).
    device: "cpu", "cuda"... (default: CUDA when available, else CPU). flip: also read each
    crop mirrored, in the same batch, and average the two readings' logits (default: as
    the model card's `flip_test` says). On CUDA the batch is
    sent from pinned memory and run under fp16 autocast; on the CPU batch norm is folded
    into the convolutions.
    """

    def __init__(self, weights_dir: Path | None = None, device: str | None = None, flip: bool | None = None) -> None:
        model, card = weights.load(weights_dir)
        self.card = card
        self.flip = card.flip_test if flip is None else flip
        self.device = pick_device(device)
        self.input_size = card.input_size
        self.age_bins = np.asarray(card.age_bins, np.float64)
        self.age_temperature, self.gender_temperature = card.age_temperature, card.gender_temperature
        self._mean = torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1) * 255
        model = model.to(self.device).to(memory_format=torch.channels_last)
        if self.device.type == "cpu":
            model = _optimise_for_cpu(fuse_batchnorm(model), self.input_size)
        self.model = model
        self._mean, self._std = self._mean.to(self.device), self._std.to(self.device)

    def _to_tensor(self, crops_rgb: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(crops_rgb)).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = (x.float() - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    def logits(self, crops_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (age logits (N, K), gender logit (N,)) for (N, S, S, 3) uint8 RGB crops."""
        with torch.inference_mode():
            x = self._to_tensor(crops_rgb)
            if self.flip:
                x = torch.cat([x, x.flip(-1)])
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                out = self.model(x).float()
            if self.flip:
                out = (out[: len(crops_rgb)] + out[len(crops_rgb) :]) / 2
            age_logits, gender_logit = split_logits(out, len(self.age_bins))
            return age_logits.cpu().numpy(), gender_logit.cpu().numpy()

    def predict(self, crops_rgb: np.ndarray) -> Prediction:
        """Predict N aligned crops in one forward pass.

        crops_rgb: (N, S, S, 3) uint8 RGB made by `align.align_crops` at S = input_size.
        Returns a Prediction; N may be 0. Raises AgevisionError on a wrong crop shape.
        """
        crops_rgb = np.asarray(crops_rgb)
        s = self.input_size
        if crops_rgb.ndim != 4 or crops_rgb.shape[1:] != (s, s, 3) or crops_rgb.dtype != np.uint8:
            raise AgevisionError(f"crops must be (N, {s}, {s}, 3) uint8 RGB, got {crops_rgb.shape} {crops_rgb.dtype}")
        if len(crops_rgb) == 0:
            empty = np.zeros(0, np.float32)
            return Prediction(empty, empty, empty, empty, np.zeros((0, len(self.age_bins)), np.float32))
        age_logits, gender_logit = self.logits(crops_rgb)
        return decode(age_logits, gender_logit, self.age_temperature, self.gender_temperature, self.age_bins)

    def predict_many(self, crops_rgb: np.ndarray, batch: int = 256) -> Prediction:
        """`predict` in batches of `batch` crops, for large sets (evaluation); same output."""
        if len(crops_rgb) <= batch:
            return self.predict(crops_rgb)
        return Prediction.concatenate([self.predict(crops_rgb[i : i + batch]) for i in range(0, len(crops_rgb), batch)])

    def estimate(self, frame_bgr: np.ndarray, faces: Faces) -> Faces:
        """`faces` with their age and gender fields read from one BGR frame (a new record).

        Faces marked unreadable (`faces.readable` False; see `quality.readable`) are not
        estimated: their age fields stay NaN, their gender "?" and their age distribution
        zero. All other faces go through the model in one batch.
        """
        faces = faces.copy()
        read = np.asarray(faces.readable, bool)
        probs = np.zeros((len(faces), len(self.age_bins)), np.float32)
        if read.any():
            pred = self.predict(align.align_crops(frame_bgr, faces.subset(read), self.input_size))
            for name in ("age", "age_low", "age_high", "p_female"):
                getattr(faces, name)[read] = getattr(pred, name)
            probs[read] = pred.age_probs
        faces.gender = gender_labels(faces.p_female, read)
        faces.age_probs = probs
        return faces
