"""Your own estimators (`train.model: custom`): dvc.yaml tracks this folder for the train stage.

Name a factory in params.yaml as ``train.custom.factory: estimators.<module>:<function>``; it is
called with ``train.custom.params`` as keyword arguments, plus ``numeric``, ``categorical``
(column positions in the model's input), ``task`` and ``seed`` when it takes them. It must
return a scikit-learn estimator or pipeline built from scikit-learn classes (the serving image
has scikit-learn, numpy and scipy, not this folder) that selects columns by position.
"""
