# Worker image: Debian's Python 3.11, the pinned runtime set (requirements.txt; no test or dev
# tools), the isim package, and dvc/mlflow on PATH. torch 2.14.1's wheels bundle their CUDA
# runtime, so a GPU host needs only its driver and the NVIDIA container toolkit: no CUDA base
# image. The base is a build argument (any Debian bookworm with apt); deploy/build_image.sh
# builds it with podman on a debootstrapped base, reusing the host's pip sources and cache.
#   docker build -t isim .                       # or: deploy/build_image.sh
#   docker run --gpus all -v "$PWD":/work isim dvc repro
ARG BASE=docker.io/library/debian:bookworm-slim
# hadolint ignore=DL3006
FROM ${BASE}

# pip's own settings as build arguments: deploy/build_image.sh points pip at a mounted wheel
# folder (PIP_NO_INDEX=1, PIP_FIND_LINKS=/wheels); empty, pip uses PyPI
ARG PIP_NO_INDEX=""
ARG PIP_FIND_LINKS=""
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# python3 is 3.11 on bookworm, as the pinned wheels need; gcc/python headers build pydensecrf2;
# git for dvc. Debian's package versions rotate within a release, so apt is not pinned (the
# Python set is).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ git \
       ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/isim
COPY requirements.txt ./
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir --disable-pip-version-check --upgrade pip==25.3 \
    && pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && git config --system --add safe.directory '*'

WORKDIR /work
ENTRYPOINT ["/bin/bash", "-c", "exec \"$@\"", "--"]
CMD ["isim", "--help"]
