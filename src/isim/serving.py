"""The model `isim predict` uses (the final segmenter or an ISIM round) as an MLflow pyfunc model:
what the Model Registry holds and serves.

``mlflow.pyfunc.load_model("models:/isim-segmenter@candidate")`` loads it in any process with
MLflow and torch installed (the isim code travels with the model); ``predict`` takes one RGB
image (H x W x 3 uint8) and returns its class-index mask (H x W uint8), the mask ``isim
predict`` writes for the same image. ``params={"crf": True}`` refines it with dense CRF.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class SegmenterModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from isim.inference import Predictor
        self.predictor = Predictor(Path(context.artifacts["checkpoint"]))

    # ndarray is the one hint MLflow neither turns into a schema (it would reshape the image) nor
    # warns about
    def predict(self, context, model_input: np.ndarray, params=None):  # noqa: ANN001
        rgb = np.asarray(model_input)
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ValueError(f"expected one RGB image H x W x 3, got an array of shape {rgb.shape}")
        return self.predictor.segment(rgb.astype(np.uint8), crf=bool((params or {}).get("crf", False)))


def log_served(checkpoint: Path, name: str, registered_name: str) -> Any:
    """Log ``checkpoint`` as a pyfunc model in the active run and register a new version."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    import isim
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]),
                               outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1))]),
                               params=ParamSchema([ParamSpec("crf", "boolean", False)]))
    return mlflow.pyfunc.log_model(name=name, python_model=__file__,  # models from code: nothing pickled
                                   artifacts={"checkpoint": str(checkpoint)},
                                   code_paths=[str(Path(isim.__file__).parent)], signature=signature,
                                   input_example=np.zeros((32, 32, 3), np.uint8),  # MLflow checks that it serves
                                   registered_model_name=registered_name or None, pip_requirements=[])


# MLflow logs this file as the model's code and runs it to load the model
set_model(SegmenterModel())
