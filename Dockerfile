# GPU worker image: the pinned runtime set (requirements.txt; no test or dev tools) with
# CUDA-enabled PyTorch (torch 2.14.1 wheels bundle their CUDA runtime), the isim package, and
# dvc/mlflow on PATH.
#   docker build -t isim .
#   docker run --gpus all -v "$PWD":/work -w /work isim dvc repro
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# python3.11 for the pinned wheels; gcc/python headers build pydensecrf2; git for dvc.
# Ubuntu's package versions rotate, so apt packages are not pinned (the Python set is).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
       build-essential git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/isim
COPY requirements.txt ./
RUN python3.11 -m venv "$VIRTUAL_ENV" \
    && pip install --upgrade pip==25.3 \
    && pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps .

WORKDIR /work
ENTRYPOINT ["/bin/bash", "-c", "exec \"$@\"", "--"]
CMD ["isim", "--help"]
