# corral: Ollama registry mirror + inference runner, CPU image (Dockerfile.cuda builds the CUDA one).
#
#   docker build -t corral .
#   docker run -d -p 11434:11434 -e CORRAL_ADMIN_TOKEN=… -v corral:/data corral
#
# Everything corral writes lies in the volume /data: blobs, catalogue, key and authorized_keys in
# /data/models, `corral cert`'s CA and certificate in /data/tls. llama.cpp is compiled with
# GGML_NATIVE=OFF, for any x86-64 with AVX2 rather than for the build machine's CPU; for older
# CPUs add -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF to
# the build argument CMAKE_ARGS.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# corral's dependency list alone, with the postgres extra (cluster mode), so that the layer compiling
# llama.cpp is rebuilt only when that list changes, not when the source or another field of
# pyproject.toml does.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml .
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" \
    > requirements.txt

FROM ${PYTHON_IMAGE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/corral
WORKDIR /src
COPY --from=requirements /src/requirements.txt .
RUN /opt/corral/bin/pip install --requirement requirements.txt
COPY pyproject.toml README.md ./
COPY migrations migrations
COPY runner runner
COPY registry registry
RUN /opt/corral/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
# llama.cpp's shared libraries need libgomp (OpenMP) and libstdc++ at run time.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin corral \
 && install -d -o corral -g corral -m 0750 /data
COPY --from=build /opt/corral /opt/corral
ENV PATH=/opt/corral/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    OLLAMA_MODELS=/data/models \
    OLLAMA_HOST=0.0.0.0:11434
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 11434
# The image has no curl: Python asks /api/version where OLLAMA_HOST listens, over https when
# CORRAL_TLS_CERT is set (unverified: it is this container's own server on loopback).
HEALTHCHECK --interval=30s --timeout=10s --start-period=2m --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request; from registry.config import parse_ollama_host; from registry.cli.client import base_url; tls = bool(os.environ.get('CORRAL_TLS_CERT')); url = base_url(parse_ollama_host(os.environ.get('OLLAMA_HOST', ''))).replace('http://', 'https://' if tls else 'http://'); urllib.request.urlopen(url + '/api/version', timeout=5, context=ssl._create_unverified_context() if tls else None)"]
CMD ["corral", "serve"]
