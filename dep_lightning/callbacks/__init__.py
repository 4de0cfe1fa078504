from dep_lightning.callbacks.predictions import PredictionWriter

__all__ = ["PredictionWriter"]
