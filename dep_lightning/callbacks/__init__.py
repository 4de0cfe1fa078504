from dep_lightning.callbacks.clock import RunClock
from dep_lightning.callbacks.evaluation import GenerationEvaluator
from dep_lightning.callbacks.predictions import PredictionsRecorder, PredictionWriter, WrittenPredictions
from dep_lightning.callbacks.progress import LogProgress
from dep_lightning.callbacks.recorder import ResultsRecorder, TestMetricsWriter
from dep_lightning.callbacks.resume import LastCheckpoint
from dep_lightning.callbacks.summary import RunSummary

__all__ = ["GenerationEvaluator", "LastCheckpoint", "LogProgress", "PredictionWriter", "PredictionsRecorder",
           "ResultsRecorder", "RunClock", "RunSummary", "TestMetricsWriter", "WrittenPredictions"]
