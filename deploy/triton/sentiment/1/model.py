"""Triton Python backend: serves one enrich model (its task named by the `task` parameter of config.pbtxt)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from enrich.models import get_model


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model = get_model(config["parameters"]["task"]["string_value"])
        self.identity = f"{self.model.name}:{self.model.version}".encode()

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = [t.decode() for t in pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().ravel()]
            results = [json.dumps(r).encode() for r in self.model.predict(texts)]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("RESULT", np.array(results, dtype=np.object_)),
                pb_utils.Tensor("MODEL", np.array([self.identity] * len(results), dtype=np.object_)),
            ]))
        return responses
