"""The PyTorch runner of the age and gender network: on CUDA (fp16 autocast, pinned
memory) or on the CPU (batch norm folded, traced, frozen; the trace cached between runs).

`TorchRunner.logits(crops_rgb, flip)` -> (N, K + 1) float32 logits (age bins, then gender).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.card import ModelCard


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


def _trace(model: torch.nn.Module, size: int) -> torch.jit.ScriptModule | None:
    """A TorchScript trace of `model` at batch 1 (None if tracing fails)."""
    import warnings

    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            example = torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last)
            return torch.jit.trace(model, example)
    except Exception:  # noqa: BLE001 - eager mode is always a correct fallback
        return None


def _optimise(traced: torch.jit.ScriptModule, size: int) -> torch.jit.ScriptModule | None:
    """The trace frozen and optimised for inference (oneDNN-friendly, about 2x faster on
    the CPU than eager); None if that fails. Not saved: a frozen module does not load back."""
    import warnings

    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            fast = torch.jit.optimize_for_inference(traced.eval())
            fast(torch.zeros(2, 3, size, size))  # other batch sizes run too
            return fast
    except Exception:  # noqa: BLE001
        return None


def cache_dir() -> Path | None:
    """Where traced models are kept between runs: AGEVISION_CACHE, else
    $XDG_CACHE_HOME/agevision, else ~/.cache/agevision ("" or "off": no cache)."""
    import os

    chosen = os.environ.get("AGEVISION_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "agevision"


def _cpu_model(weights_dir: Path | None, size: int) -> torch.nn.Module:
    """The CPU model, traced: loaded from the cache when it holds a trace of these very
    weights and card (sha256 of both), this torch and this input size; else built (batch
    norm folded into the convolutions), traced and cached. A cache that cannot be read
    or written is passed over."""
    import warnings

    folder = cache_dir()
    name = f"agegender-{weights.files_digest(weights_dir)[:32]}-torch{torch.__version__}-{size}.pt"
    cached = folder / name if folder is not None else None
    if cached is not None and cached.is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                fast = _optimise(torch.jit.load(str(cached), map_location="cpu"), size)
            if fast is not None:
                return fast
        except Exception:  # noqa: BLE001 - a broken cache entry is rebuilt
            pass
    from agevision.model.net import fuse_batchnorm

    model, _ = weights.load(weights_dir)
    model = fuse_batchnorm(model.to(memory_format=torch.channels_last))
    traced = _trace(model, size)
    if traced is None:
        return model
    if cached is not None:
        import io

        from agevision.files import write_atomic

        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.jit.save(traced, buf)
            write_atomic(cached, buf.getvalue())
        except (OSError, AgevisionError, RuntimeError):
            warnings.warn(f"cannot keep the traced model in {folder} (set AGEVISION_CACHE): starts stay slower",
                          stacklevel=3)
    return _optimise(traced, size) or model


class TorchRunner:
    """The network on `device` ("cpu", "cuda", "cuda:1"; None: CUDA when available)."""

    backend = "torch"

    def __init__(self, weights_dir: Path | None, card: ModelCard, device: str | None = None) -> None:
        self.device = pick_device(device)
        self._mean = (torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255).to(self.device)
        self._std = (torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1) * 255).to(self.device)
        if self.device.type == "cpu":
            self.model = _cpu_model(weights_dir, card.input_size)
        else:
            model, _ = weights.load(weights_dir)
            self.model = model.to(self.device).to(memory_format=torch.channels_last)

    def _to_tensor(self, crops_rgb: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(crops_rgb)).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = (x.float() - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    def logits(self, crops_rgb: np.ndarray, flip: bool = False) -> np.ndarray:
        """(N, K + 1) logits of (N, S, S, 3) uint8 RGB crops; flip: averaged with the mirrored crops'."""
        with torch.inference_mode():
            x = self._to_tensor(crops_rgb)
            if flip:
                x = torch.cat([x, x.flip(-1)])
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                out = self.model(x).float()
            if flip:
                out = (out[: len(crops_rgb)] + out[len(crops_rgb) :]) / 2
            return out.cpu().numpy()

    def set_threads(self, n: int) -> int:
        """Torch CPU threads (on the CPU only); returns those in use."""
        if self.device.type == "cpu":
            torch.set_num_threads(n)
        return torch.get_num_threads()
