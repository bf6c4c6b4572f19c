"""An MLServer runtime serving the enrichment models over the KServe V2 protocol (the `triton` backend's server in
development and tests). The model's name in model-settings.json is its task: `sentiment` or `ner`.

Request: `TEXT` BYTES [n]. Response: `RESULT` BYTES [n] (JSON per text) and `MODEL` BYTES [n] (`name:version`).
"""

from __future__ import annotations

import asyncio
import json

from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse

from .models import get_model


class EnrichRuntime(MLModel):
    async def load(self) -> bool:
        self.model = get_model(self.name)
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self.max_chars = int(extra.get("max_chars", 100_000))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        text = next((i for i in payload.inputs if i.name == "TEXT"), None)
        if text is None or text.datatype != "BYTES":
            raise MLServerError("expected one BYTES input named TEXT", status_code=400)
        texts = StringCodec.decode_input(text)
        if any(len(t) > self.max_chars for t in texts):
            raise MLServerError(f"a text is over this server's limit of {self.max_chars} characters", status_code=400)
        # off the server's event loop, like the local backend
        results = await asyncio.to_thread(self.model.predict, texts)
        identity = f"{self.model.name}:{self.model.version}"
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[
            StringCodec.encode_output("RESULT", [json.dumps(r) for r in results]),
            StringCodec.encode_output("MODEL", [identity] * len(results)),
        ])
