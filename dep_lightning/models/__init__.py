"""Methods: DEP and its trained control, the paper's baselines, no-model copy baselines.

Importing this package declares every built-in method in the registry of methods
(``dep_lightning/methods.py``), which is how the tables learn them."""

from dep_lightning.models.base import GenerativeModule, PromptingModule
from dep_lightning.models.copy import CopyBaseline
from dep_lightning.models.dep_module import DEPModule, NoUserControl
from dep_lightning.models.dpl import DPLModule
from dep_lightning.models.generation import GenerationConfig
from dep_lightning.models.pag import PAGModule
from dep_lightning.models.pplug import PPlugModule

__all__ = ["CopyBaseline", "DEPModule", "DPLModule", "GenerationConfig", "GenerativeModule", "NoUserControl",
           "PAGModule", "PPlugModule", "PromptingModule"]
