# mypy: ignore-errors
"""The BentoML service of the comparison (copied next to a throwaway venv and run by
`bentoml serve`): the same pickled scikit-learn pipeline our image serves, the same request body
(MLflow's ``dataframe_split``) on the same route, one worker, nothing else."""

import os
import pickle
from typing import Any

import bentoml
import pandas as pd


@bentoml.service(workers=1)
class Classifier:
    def __init__(self) -> None:
        with open(os.environ["BENCH_MODEL"], "rb") as handle:
            self.model = pickle.load(handle)

    @bentoml.api(route="/invocations")
    def invocations(self, dataframe_split: dict[str, Any]) -> dict[str, Any]:
        frame = pd.DataFrame(dataframe_split["data"], columns=dataframe_split["columns"])
        return {"predictions": self.model.predict(frame).tolist()}
