"""The model: data loading and checks, training, evaluation, gates, ONNX export, MLflow."""
