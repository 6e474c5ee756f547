"""The toy-world benchmark: every erasure method on every concept, with UnlearnCanvas's metrics.

`python -m advanchor.benchmark --out DIR` (see `__main__`); cells (`cells`), their metrics (`metrics`),
the run and its resume (`runner`), and the tables, plots and HTML page (`report`).
"""
