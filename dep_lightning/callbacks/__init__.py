from dep_lightning.callbacks.evaluation import GenerationEvaluator, TestMetricsWriter
from dep_lightning.callbacks.predictions import PredictionWriter

__all__ = ["GenerationEvaluator", "PredictionWriter", "TestMetricsWriter"]
