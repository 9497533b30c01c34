# corral: Ollama registry mirror + inference runner.
#
# CPU build:   docker build -t corral .
# CUDA build:  docker build -t corral:cuda \
#                --build-arg BASE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#                --build-arg CMAKE_ARGS="-DGGML_CUDA=on" .
#              docker run --gpus all -p 11434:11434 -e CORRAL_ADMIN_TOKEN=... -v corral:/data corral:cuda
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ENV CMAKE_ARGS=${CMAKE_ARGS} \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git python3 python3-venv python3-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/corral
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY runner ./runner
COPY migrations ./migrations
COPY config ./config
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install '.[postgres]'

# Listening beyond loopback: admin and write routes then require CORRAL_ADMIN_TOKEN.
ENV PATH=/opt/venv/bin:$PATH \
    OLLAMA_HOST=0.0.0.0:11434 \
    OLLAMA_MODELS=/data/models \
    CORRAL_DATABASE_URL=sqlite+aiosqlite:////data/corral.db
VOLUME /data
EXPOSE 11434
CMD ["corral", "serve"]
