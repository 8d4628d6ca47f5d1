"""The DVC stages, one module each: ``python -m pipeline.stages.<name>`` (see dvc.yaml).

A stage reads params.yaml once, calls the ml/ or build/ code, and writes the files
:mod:`pipeline.artifacts` names. No stage imports the CLI, so editing a command's help text
re-runs nothing; tests/unit/pipeline/test_dvc_deps.py keeps dvc.yaml's deps equal to what each
stage really imports.
"""
