"""The wire formats: MLflow scoring and the Open Inference Protocol (V2)."""
