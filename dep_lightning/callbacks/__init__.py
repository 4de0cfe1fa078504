from dep_lightning.callbacks.evaluation import GenerationEvaluator, TestMetricsWriter
from dep_lightning.callbacks.predictions import PredictionWriter
from dep_lightning.callbacks.progress import LogProgress
from dep_lightning.callbacks.summary import RunSummary

__all__ = ["GenerationEvaluator", "LogProgress", "PredictionWriter", "RunSummary", "TestMetricsWriter"]
