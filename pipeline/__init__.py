"""params.yaml in, a validated, tracked model and a tested serving container out."""

__version__ = "0.1.0"
