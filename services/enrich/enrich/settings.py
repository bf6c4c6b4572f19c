"""Enrich's settings: the shared ones plus ENRICH_* variables."""

from typing import Literal

from platform_common.kafka import ENRICHED, RAW
from platform_common.settings import CommonSettings
from platform_common.stream import Guarantee

Backend = Literal["local", "triton"]


class EnrichSettings(CommonSettings):
    service_name: str = "enrich"
    enrich_port: int = 8001
    enrich_host: str = "127.0.0.1"  # the ops endpoints' bind address (0.0.0.0 in containers, for Prometheus)
    # the consumer group, and with the instance the transactional id (keep the instance stable across restarts of
    # one replica, e.g. a StatefulSet pod name, so a restart fences its killed predecessor at once; default: host)
    enrich_app_id: str = "enrich"
    enrich_instance_id: str | None = None
    # exactly_once: outputs and consumed offsets in one Kafka transaction; at_least_once: offsets after the outputs
    enrich_processing_guarantee: Guarantee = "exactly_once"
    enrich_input_topic: str = RAW
    enrich_output_topic: str = ENRICHED

    # where the encoder runs: ONNX Runtime in a worker process (local) or a KServe V2 server (triton); one encoder
    # serves both entities and sentiment
    enrich_backend: Backend = "local"
    # worker processes for the local backend (0: a thread of this process; 2 keep both cores busy: the encoder is
    # the cost), ONNX Runtime threads in each
    enrich_local_workers: int = 2
    enrich_ort_threads: int = 1
    # KServe V2 HTTP endpoint (Triton with deploy/triton, or the Triton of nvidia-pytriton) and the model's name there
    enrich_triton_url: str = "localhost:8010"
    enrich_triton_model: str = "minilm_multitask"
    # Latin-script texts whose language is undetermined (below this confidence, e.g. a few words; or taken for a
    # language without models below enrich.language.UNSUPPORTED_CONFIDENCE, 0.9) go to this language's models;
    # 0.5 and 0.9 chosen on the validation splits (`python -m enrich.evaluation --routing ...`)
    enrich_default_language: str = "en"
    enrich_language_min_confidence: float = 0.5

    # stream batching: up to this many records per batch (and transaction), lingering at most this long for them
    # once the first arrived (each transaction costs broker round trips, so a batch should hold more than a few)
    enrich_stream_batch: int = 1000
    enrich_stream_wait_s: float = 0.1
    # a killed worker's partitions move to a new one after this long without heartbeats
    enrich_session_timeout_s: float = 10.0
    # model micro-batching, request timeout and circuit breaker
    enrich_model_batch: int = 256
    enrich_model_wait_ms: float = 2.0
    enrich_model_inflight: int = 2
    enrich_model_timeout_s: float = 5.0
    enrich_breaker_failures: int = 3
    enrich_breaker_reset_s: float = 5.0
    # texts longer than this are passed through unenriched with enrichment_status "too_large"
    enrich_max_text_chars: int = 20_000
