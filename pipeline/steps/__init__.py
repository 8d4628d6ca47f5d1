"""One module per DVC stage: what `dvc repro` runs, as functions of (params, settings)."""
