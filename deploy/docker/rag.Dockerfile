# syntax=docker/dockerfile:1
# rag: build from the repository root with
#   docker build -f deploy/docker/rag.Dockerfile -t platform/rag .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# the CPU build of torch first, so that nothing later pulls PyPI's CUDA build (several GB)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url ${TORCH_INDEX_URL} torch
# llama.cpp is compiled for x86-64-v3, not for the build host (its native AMX kernels crash where AMX is not granted)
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
    pip install llama-cpp-python==0.3.36
COPY libs/common /src/libs/common
RUN pip install "/src/libs/common[llm]"
COPY services/rag /src/services/rag
RUN pip install /src/services/rag

FROM ${PYTHON_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/platform --create-home app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STACK_DATA_DIR=/var/lib/platform \
    HF_HUB_OFFLINE=1
WORKDIR /var/lib/platform
USER 10001:10001
EXPOSE 8003
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8003/readyz', timeout=4)"]
CMD ["python", "-m", "rag"]
