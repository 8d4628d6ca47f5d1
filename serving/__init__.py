"""The model as a REST micro-service: the serving image's only Python.

Start with :mod:`serving.app` (the HTTP contract and ``create_app``), :mod:`serving.routes` (the
route table) and :mod:`serving.settings` (``SERVING_*`` variables). Imports nothing beyond
requirements/serving.in: no MLflow, pandas, pydantic, and nothing of the ``pipeline`` package.
The pipeline imports this package (the model card's reader and writer, the runtimes and their
tolerances), never the other way round.
"""
