from dep_lightning.callbacks.evaluation import GenerationEvaluator, TestMetricsWriter
from dep_lightning.callbacks.predictions import PredictionWriter
from dep_lightning.callbacks.progress import LogProgress

__all__ = ["GenerationEvaluator", "LogProgress", "PredictionWriter", "TestMetricsWriter"]
