# syntax=docker/dockerfile:1
# notify: build from the repository root with
#   docker build -f deploy/docker/notify.Dockerfile -t platform/notify .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY libs/common /src/libs/common
RUN pip install /src/libs/common
COPY services/notify /src/services/notify
RUN pip install /src/services/notify

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/platform --create-home app
COPY --from=build /opt/venv /opt/venv
# the routing tree (a ConfigMap replaces it in Kubernetes)
COPY services/notify/routes.yaml /etc/platform/routes.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STACK_DATA_DIR=/var/lib/platform \
    NOTIFY_ROUTES_FILE=/etc/platform/routes.yaml
WORKDIR /var/lib/platform
USER 10001:10001
EXPOSE 8005
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8005/readyz', timeout=4)"]
CMD ["python", "-m", "notify"]
