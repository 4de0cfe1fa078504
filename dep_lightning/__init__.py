"""DEP (difference-aware embedding-based personalization) as a Lightning experiment framework."""

__version__ = "0.1.0"
