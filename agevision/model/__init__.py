"""The age and gender network, its weights files and card, the batched Estimator (torch), and
the numpy decoding of its outputs (`model.decode`, no torch).

`Estimator` and `Prediction` are imported lazily, so that `agevision.model.decode` and
`agevision.model.card` load without torch.
"""

__all__ = ["Estimator", "Prediction"]


def __getattr__(name: str):
    if name == "Estimator":
        from agevision.model.estimator import Estimator

        return Estimator
    if name == "Prediction":
        from agevision.model.decode import Prediction

        return Prediction
    raise AttributeError(f"module 'agevision.model' has no attribute {name!r}")
