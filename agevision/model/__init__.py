"""The age and gender network, its weights files and the batched Estimator."""

from agevision.model.estimator import Estimator, Prediction

__all__ = ["Estimator", "Prediction"]
