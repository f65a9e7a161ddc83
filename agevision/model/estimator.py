"""Estimator: shipped weights in, age and gender of a batch of aligned face crops out.

The network runs on one of two backends, chosen once: ONNX Runtime on the CPU
(`model.onnx_backend`: the shipped agegender.onnx, exported from the same weights; starts
without importing torch and reads a face in a third of the time) or PyTorch
(`model.torch_backend`: the GPU path, and the CPU when no matching ONNX file is there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agevision import align
from agevision.errors import AgevisionError
from agevision.faces import Faces
from agevision.labels import gender_labels
from agevision.model import weights
from agevision.model.decode import Prediction, decode
from agevision.model.denoise import denoise

BACKENDS = ("auto", "onnx", "torch")


def gpu_present() -> bool:
    """Whether this machine shows an NVIDIA GPU (device nodes), without importing torch."""
    import glob
    import os

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def make_runner(weights_dir: Path | None, card, device: str | None, backend: str = "auto"):
    """The runner for `backend`: "onnx" (CPU only; AgevisionError if the weights folder has
    no ONNX export of these weights), "torch", or "auto": ONNX Runtime when the model runs on
    the CPU and a matching export is there, else PyTorch."""
    from agevision.model import onnx_backend

    if backend not in BACKENDS:
        raise AgevisionError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    on_cpu = device == "cpu" or (device is None and not gpu_present())
    if backend == "onnx":
        if not on_cpu:
            raise AgevisionError("the ONNX backend runs on the CPU (the GPU path is PyTorch): use --device cpu")
        return onnx_backend.OnnxRunner(onnx_backend.checked_export(weights_dir, card), card)
    if backend == "auto" and on_cpu and onnx_backend.available():
        path = onnx_backend.matching_export(weights_dir, card)
        if path is not None:
            return onnx_backend.OnnxRunner(path, card)
    from agevision.model.torch_backend import TorchRunner

    return TorchRunner(weights_dir, card, device)


class Estimator:
    """Batched age and gender estimation with the shipped (or given) weights.

    weights_dir: folder with agegender.safetensors and agegender.json (default weights/).
    device: "cpu", "cuda"... (default: CUDA when available, else CPU). flip: also read each
    crop mirrored, in the same batch, and average the two readings' logits (default: as
    the model card's `flip_test` says). backend: "auto", "onnx" or "torch" (see
    `make_runner`); `backend` and `device` say which ran. ensemble: add the card's second
    gender network (`model.gender_ensemble`), if it names one (default True); `self.ensemble`
    is it, or None.
    """

    def __init__(self, weights_dir: Path | None = None, device: str | None = None, flip: bool | None = None,
                 backend: str = "auto", ensemble: bool = True) -> None:
        card = weights.load_card(weights_dir)
        self.card = card
        self.flip = card.flip_test if flip is None else flip
        self.input_size = card.input_size
        self.age_bins = np.asarray(card.age_bins, np.float64)
        self.age_temperature, self.gender_temperature = card.age_temperature, card.gender_temperature
        self.ensemble = None
        if ensemble and card.gender_ensemble is not None:
            from agevision.model.gender_ensemble import SecondGender

            self.ensemble = SecondGender(card.gender_ensemble, weights_dir)
        self.runner = make_runner(weights_dir, card, device, backend)
        self.backend = self.runner.backend
        self.device = self.runner.device  # .type: "cpu" or "cuda"

    def prepare(self, crops_rgb: np.ndarray) -> np.ndarray:
        """The crops as the network reads them: the noisy ones blurred as the card's `denoise`
        rule says (`model.denoise`); the same array when none is."""
        return denoise(crops_rgb, self.card.denoise)

    def logits(self, crops_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (age logits (N, K), gender logit (N,)) for (N, S, S, 3) uint8 RGB crops, after
        `prepare`."""
        return self._logits(self.prepare(crops_rgb))

    def _logits(self, prepared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.runner.logits(prepared, self.flip)
        k = len(self.age_bins)  # columns: age bins, then the gender logit (see model.net)
        return out[:, :k], out[:, k]

    def set_threads(self, n: int) -> int:
        """CPU threads for the model; returns those in use."""
        return self.runner.set_threads(n)

    def predict(self, crops_rgb: np.ndarray) -> Prediction:
        """Predict N aligned crops in one forward pass (and one of the second gender network).

        crops_rgb: (N, S, S, 3) uint8 RGB made by `align.align_crops` at S = input_size; both
        networks read them after `prepare`.
        Returns a Prediction; N may be 0. Raises AgevisionError on a wrong crop shape.
        """
        crops_rgb = np.asarray(crops_rgb)
        s = self.input_size
        if crops_rgb.ndim != 4 or crops_rgb.shape[1:] != (s, s, 3) or crops_rgb.dtype != np.uint8:
            raise AgevisionError(f"crops must be (N, {s}, {s}, 3) uint8 RGB, got {crops_rgb.shape} {crops_rgb.dtype}")
        if len(crops_rgb) == 0:
            empty = np.zeros(0, np.float32)
            return Prediction(empty, empty, empty, empty, np.zeros((0, len(self.age_bins)), np.float32))
        crops_rgb = self.prepare(crops_rgb)
        second = self.ensemble.submit(crops_rgb) if self.ensemble is not None else None
        age_logits, gender_logit = self._logits(crops_rgb)
        z = gender_logit.astype(np.float64) / self.gender_temperature
        pred = decode(age_logits, z, self.age_temperature, 1.0, self.age_bins)
        if second is not None:
            pred.p_female = self.ensemble.p_female(z, pred.age, second.result())
        return pred

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
            crops = align.align_crops(frame_bgr, faces.subset(read), self.input_size, self.card.denoise, self.card.crop)
            pred = self.predict(crops)
            for name in ("age", "age_low", "age_high", "p_female"):
                getattr(faces, name)[read] = getattr(pred, name)
            probs[read] = pred.age_probs
        faces.gender = gender_labels(faces.p_female, read)
        faces.age_probs = probs
        return faces
