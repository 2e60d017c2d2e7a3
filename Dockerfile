# syntax=docker/dockerfile:1
# The llm-router image: router, tier workers, topic creation and replay, one entry point.
#
#   docker build -t llm-router .
#   docker run --rm -e LLM_ROUTER_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 llm-router router
#   docker run --rm ... llm-router worker --tier fast
#
# The builder installs the package with its runtime dependencies only: no `train` extra (no
# torch, no transformers), no `local` extra (llama.cpp runs as its own container). The ONNX
# classifier in classifier_onnx/model/ is package data, so it lands in site-packages.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/llm-router
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY streams/ streams/
COPY workers/ workers/
COPY classifier_onnx/ classifier_onnx/
COPY deploy/ deploy/
# A regular (not editable) install: the runtime stage needs no source tree.
RUN /opt/llm-router/bin/pip install --no-compile . \
 && /opt/llm-router/bin/python -c "from classifier_onnx import default_model_dir as d; \
assert (d() / 'model.onnx').is_file(), f'no ONNX model in {d()}'" \
 && ! /opt/llm-router/bin/python -c "import torch" 2>/dev/null

FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="llm-router" \
      org.opencontainers.image.description="Kafka-native LLM request router" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 llm-router \
 && useradd --system --uid 10001 --gid llm-router --home-dir /var/lib/llm-router \
      --create-home --shell /usr/sbin/nologin llm-router
COPY --from=builder /opt/llm-router /opt/llm-router
ENV PATH=/opt/llm-router/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Faust keeps its table data in <app_id>-data/ under the working directory.
WORKDIR /var/lib/llm-router
USER 10001:10001
# Router: Prometheus metrics and Faust's web server; workers: /metrics and /healthz.
EXPOSE 9400 6066 9500
ENTRYPOINT ["llm-router"]
CMD ["--help"]
