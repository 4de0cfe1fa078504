"""Results: run directories -> the paper's tables (Markdown / LaTeX / CSV) and figures.

``registry`` reads and groups runs, ``stats`` bootstraps intervals and paired tests,
``tables`` defines and fills the tables (``personalization`` the likelihood table of
``dep-lightning score`` runs), ``render`` writes them, ``figures`` draws the K sweep, the
uniqueness comparison and the personalization gains, ``wandb_source`` reads runs from W&B, and
``command`` is ``dep-lightning tables``.
"""
