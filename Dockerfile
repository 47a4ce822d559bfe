# The image `oneml study export-argo` names by default: oneml:<version>, as `make image` tags it
# (docker build -t oneml:0.1.0 .; push it under your registry and pass that name with --image).
# It holds exactly the locked set: requirements-cuda.lock (torch and the CUDA runtime its PyPI build uses) and
# requirements.lock (everything else), installed with their hashes and no dependency resolution, on the Python
# the lock was resolved for. The CUDA base matches the CUDA of that torch build; the GPU driver comes from the
# node (NVIDIA container toolkit). No Docker engine runs where oneml is developed, so this file is not built
# there: tests/test_lock.py checks that it installs exactly the locks, with the lock's Python and torch pin.
ARG CUDA_IMAGE=nvidia/cuda:13.0.3-runtime-ubuntu24.04

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM ${CUDA_IMAGE}
ARG PYTHON_VERSION=3.11.7
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
COPY --from=uv /uv /usr/local/bin/uv
# An exact Python build (python-build-standalone), not whichever python3 the distribution ships.
RUN uv python install ${PYTHON_VERSION} && uv venv --python ${PYTHON_VERSION} /opt/venv
COPY requirements-cuda.lock requirements.lock /opt/lock/
RUN uv pip install --no-deps --require-hashes -r /opt/lock/requirements-cuda.lock -r /opt/lock/requirements.lock
COPY pyproject.toml README.md /opt/oneml/
COPY src /opt/oneml/src
# oneml itself, built with the locked setuptools: nothing outside the locks is fetched.
RUN uv pip install --no-deps --no-build-isolation /opt/oneml && oneml --help > /dev/null
WORKDIR /work
