"""Methods: DEP and its trained control, prompting baselines, no-model copy baselines."""

from dep_lightning.models.base import GenerationConfig, GenerativeModule, PromptingModule
from dep_lightning.models.copy import CopyBaseline
from dep_lightning.models.dep_module import DEPModule, NoUserControl

__all__ = ["CopyBaseline", "DEPModule", "GenerationConfig", "GenerativeModule", "NoUserControl", "PromptingModule"]
