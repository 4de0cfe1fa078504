"""DEP (difference-aware embedding-based personalization) as a Lightning experiment framework."""

__version__ = "0.1.0"

# Before anything imports a Hugging Face library: models load from local files only.
from dep_lightning.safety import offline_defaults as _offline_defaults  # noqa: E402

_offline_defaults()
