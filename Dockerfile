# syntax=docker/dockerfile:1.7
#
# lambdascope container images: one file, one build target per image.
#
#   docker build --target registry  -t ghcr.io/lambdascope/registry:0.1.0  .
#   docker build --target trainer   -t ghcr.io/lambdascope/trainer:0.1.0   .
#   docker build --target estimator -t ghcr.io/lambdascope/estimator:0.1.0 .
#   docker build --target worker    -t ghcr.io/lambdascope/worker:0.1.0    .
#
# GPU variants carry a CUDA build of torch instead of the CPU one; same targets, tag suffix -gpu:
#
#   docker build --build-arg TORCH=gpu --target trainer -t ghcr.io/lambdascope/trainer:0.1.0-gpu .
#
# deploy/k8s/README.md has the full build-and-push list. The image names are the target names:
# tests/deploy/test_manifests.py checks every image the manifests use against the targets here.
#
# Stages:
#   base        python:3.11-slim, the non-root user (uid/gid 10001), a virtualenv with every
#               runtime dependency except torch, installed with --no-deps from the lock below
#   torch-cpu   + torch from the PyTorch CPU wheel index (no CUDA libraries: ~200 MB, not GBs)
#   torch-gpu   + torch from a CUDA (cu12x) PyTorch wheel index, with the NVIDIA runtime wheels
#   app         torch-${TORCH} + the lambdascope package itself
#   audit-runtime  app + g++ (torch.compile's CPU code generator), under estimator and worker
#   registry | trainer | estimator   the three gRPC services (`python -m services.<name>`)
#   worker      one job in one pod (`python -m services.<trainer|estimator>.worker`), for the
#               Kubernetes Job backend; the Job names the module in its args

ARG PYTHON_IMAGE=python:3.11-slim
# Which torch the images carry: cpu | gpu (selects the torch-cpu or torch-gpu stage).
ARG TORCH=cpu
ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The unprivileged user every container runs as (the manifests also set runAsUser 10001).
RUN groupadd --system --gid 10001 lambdascope \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/lambdascope --create-home \
        --shell /usr/sbin/nologin lambdascope \
 && python -m venv /opt/venv

# The runtime dependencies, every one pinned, transitive ones included, so `pip install
# --no-deps` gives exactly this set on every build (requirements.txt pins only the direct
# dependencies, and mixes in test tools). The direct pins are requirements.txt's;
# tests/deploy/test_manifests.py fails when they drift apart or when a runtime dependency's
# dependency is missing here. torch is not listed: the torch-* stages install it from the
# PyTorch index of the variant. Test-only packages (pytest, moto, kubernetes-validate) and
# grpcio-tools (`make proto` only) stay out of the images.
COPY <<EOF /opt/lambdascope/requirements.lock
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
alembic==1.20.1
argon2-cffi==25.1.0
argon2-cffi-bindings==26.2.0
attrs==26.1.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
cloudpickle==3.1.2
contourpy==1.3.3
cycler==0.12.1
durationpy==0.11
filelock==4.2.11
fonttools==4.68.0
frozenlist==1.8.0
fsspec==2026.9.0
googleapis-common-protos==1.76.0
grpcio==1.85.1
grpcio-health-checking==1.85.1
grpcio-reflection==1.85.1
grpcio-status==1.85.1
idna==3.20
jinja2==3.1.6
joblib==1.6.0
kiwisolver==1.5.1
kubernetes==36.0.0
mako==1.4.3
markupsafe==3.0.4
matplotlib==3.11.2
minio==7.2.20
mpmath==1.3.0
multidict==7.2.1
narwhals==2.29.0
networkx==3.6.1
numpy==2.4.6
oauthlib==4.0.1
packaging==26.4
pillow==13.0.0
prometheus-client==0.26.0
propcache==0.5.4
protobuf==7.36.2
psycopg==3.3.9
psycopg-binary==3.3.9
pycparser==3.12
pycryptodome==4.4.0
pyparsing==3.3.3
python-dateutil==2.9.0.post0
pyyaml==6.0.3
requests==2.34.2
requests-oauthlib==2.0.0
safetensors==0.8.0
scikit-learn==1.9.1
scipy==1.17.1
setuptools==84.2.1
six==1.17.0
sqlalchemy==2.1.9
sympy==1.14.0
threadpoolctl==3.8.0
typing-extensions==4.16.0
urllib3==2.8.0
websocket-client==1.9.2
yarl==1.25.1
EOF

# Wheels only: the slim image has no compiler, and a source build would not be reproducible.
RUN pip install --no-deps --only-binary=:all: -r /opt/lambdascope/requirements.lock

# ---------------------------------------------------------------------------------------------
FROM base AS torch-cpu
ARG TORCH_VERSION
# The CPU index's wheel (torch==X+cpu) needs no CUDA libraries; its Python dependencies are
# in the lock, so --no-deps holds here too.
RUN pip install --no-deps --only-binary=:all: \
        --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# ---------------------------------------------------------------------------------------------
FROM base AS torch-gpu
ARG TORCH_VERSION
# A CUDA 12.x build from PyTorch's own index (cu126, cu128, ...: pick one listed for
# TORCH_VERSION at https://download.pytorch.org/whl/torch/ that the nodes' driver supports).
# These wheels bundle no CUDA: they depend on NVIDIA's runtime wheels (nvidia-cublas-cu12,
# nvidia-cudnn-cu12, ...) and triton, pinned exactly by torch's own metadata and served by the
# same index, so this one install resolves dependencies. Everything else torch needs is already
# installed from the lock, and the lock as constraints keeps pip from moving any of it. No CUDA
# base image is needed: the driver (libcuda) comes from the node through the NVIDIA container
# runtime.
ARG TORCH_CUDA=cu128
RUN pip install --only-binary=:all: -c /opt/lambdascope/requirements.lock \
        --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" "torch==${TORCH_VERSION}" \
 && pip check
# What the NVIDIA container runtime mounts into the container: compute (CUDA) and utility
# (nvidia-smi). NVIDIA_VISIBLE_DEVICES is deliberately not set here: the device plugin sets it
# for the GPUs a pod was given; `all` in the image would hand every GPU of a node to any pod
# that runs the image without a GPU limit.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---------------------------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM torch-${TORCH} AS app

# The package itself (lambdascope/ and services/, with the registry's Alembic migrations and
# the `lambdascope` CLI), built from a throwaway view of the context: no source layer, no build
# leftovers. --no-build-isolation builds with the lock's pinned setuptools. `pip check` proves
# the environment complete: every installed distribution's dependencies are installed.
RUN --mount=type=bind,source=.,target=/src,rw \
    pip install --no-cache-dir --no-deps --no-build-isolation /src \
 && pip check \
 && python -c "import lambdascope, services.registry, services.trainer, services.estimator"

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="lambdascope" \
      org.opencontainers.image.description="Complexity audits of neural networks (local learning coefficient as a service)" \
      org.opencontainers.image.version="${VERSION}"

# Defaults for a container run as is (`docker run -p 50051:50051 ...`); the Kubernetes
# ConfigMap sets the same variables explicitly. Pods mount writable emptyDirs over /tmp and
# the data directory (the root filesystem is read-only there); caches go under /tmp.
ENV LAMBDASCOPE_HOST=0.0.0.0 \
    LAMBDASCOPE_PORT=50051 \
    LAMBDASCOPE_METRICS_PORT=9090 \
    LAMBDASCOPE_DATA_DIR=/var/lib/lambdascope \
    LAMBDASCOPE_HOME=/tmp/lambdascope \
    XDG_CACHE_HOME=/tmp/.cache \
    TRITON_CACHE_DIR=/tmp/.triton \
    HOME=/home/lambdascope

RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/lambdascope
WORKDIR /home/lambdascope
USER 10001:10001
# The services finish in-flight calls and mark running jobs INTERRUPTED on SIGTERM; workers
# exit with code 1 (infrastructure) on it. No HEALTHCHECK: Kubernetes probes the standard gRPC
# health service (grpc.health.v1) instead.
STOPSIGNAL SIGTERM

# ---------------------------------------------------------------------------------------------
FROM app AS registry
# gRPC, Prometheus /metrics, and health alone in plaintext when gRPC serves TLS
# (LAMBDASCOPE_HEALTH_PORT, deploy/k8s/components/tls)
EXPOSE 50051 9090 50052
ENTRYPOINT ["python", "-m", "services.registry"]

# ---------------------------------------------------------------------------------------------
FROM app AS trainer
EXPOSE 50051 9090 50052
ENTRYPOINT ["python", "-m", "services.trainer"]

# ---------------------------------------------------------------------------------------------
# What runs audits (the estimator, whose local workers are its subprocesses, and the worker):
# torch.compile's CPU code generator (inductor) builds C++ with the system compiler. An audit that
# samples long enough compiles its gradient (lambdascope/llc/compiled.py: 1.4-2.6x faster steps
# on small and mid-sized models); without g++ it samples on eagerly, and its report says so.
FROM app AS audit-runtime
USER root
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001

# ---------------------------------------------------------------------------------------------
FROM audit-runtime AS estimator
EXPOSE 50051 9090 50052
ENTRYPOINT ["python", "-m", "services.estimator"]

# ---------------------------------------------------------------------------------------------
FROM audit-runtime AS worker
# One job per container: a Kubernetes Job passes the module as its args,
# ["services.trainer.worker"] or ["services.estimator.worker"]. Exit codes: 0 succeeded,
# 1 infrastructure (retry), 2 bad input (the Job's podFailurePolicy fails the Job at once).
# No ports: a worker serves nothing, it calls the registry. No default module: a worker run
# without one stops at once ("Argument expected for the -m option") instead of guessing.
ENTRYPOINT ["python", "-m"]
