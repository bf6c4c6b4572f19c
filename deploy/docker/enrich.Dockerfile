# syntax=docker/dockerfile:1
# enrich: build from the repository root with
#   docker build -f deploy/docker/enrich.Dockerfile -t platform/enrich .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY libs/common /src/libs/common
RUN pip install /src/libs/common
COPY services/enrich /src/services/enrich
RUN pip install /src/services/enrich

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/platform --create-home app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STACK_DATA_DIR=/var/lib/platform
WORKDIR /var/lib/platform
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/readyz', timeout=4)"]
CMD ["python", "-m", "enrich"]
