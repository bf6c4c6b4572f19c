# syntax=docker/dockerfile:1
# anomaly: build from the repository root with
#   docker build -f deploy/docker/anomaly.Dockerfile -t platform/anomaly .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# the CPU build of torch first, so that nothing later pulls PyPI's CUDA build (several GB)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url ${TORCH_INDEX_URL} torch
COPY libs/common /src/libs/common
RUN pip install /src/libs/common
COPY services/anomaly /src/services/anomaly
RUN pip install /src/services/anomaly

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/platform --create-home app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STACK_DATA_DIR=/var/lib/platform
WORKDIR /var/lib/platform
USER 10001:10001
EXPOSE 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/readyz', timeout=4)"]
CMD ["python", "-m", "anomaly"]
