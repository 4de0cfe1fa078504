"""One reader per source format; all produce the internal schema (``data/schema.py``)."""
