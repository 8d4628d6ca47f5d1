# The training image: the pipeline's own locked environment (requirements/pipeline.lock), git and
# this project's package on the project's base image, so that `dvc repro`, `dvc exp run` and the
# `pipeline` command run in a container exactly as on the host (docs/training-image.md).
#
# Built by `make train-image` (pipeline/image/train.py) with no network: the wheels come from
# build/train-wheels, downloaded on the host from requirements/pipeline.lock and checked against
# its hashes; git and what it needs beyond the base image from build/train-debs, Debian packages
# downloaded on the host for exactly that base. That command writes the build context itself
# (the repository's .dockerignore is the serving image's). Classic builder compatible.
#
#   docker run --rm -u "$(id -u):$(id -g)" -v "$PWD":/work pipeline-train:latest dvc repro validate
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- the locked environment, installed offline and hash-checked, as shipped ----------------------
# One RUN, one layer: the image copies it once. A pinned version PyPI has no wheel for
# (antlr4-python3-runtime 4.9.3, via hydra-core) is built here from its hash-checked source
# archive, with the lock's own setuptools (installed first, from the same hash-checked wheel) and
# no build isolation: the build fetches nothing. Not needed to train, so not shipped: pip, tests,
# type stubs and C sources; onnxruntime's C-API library (its Python binding links the runtime
# statically) and offline model tools (as in the serving image); pyarrow's Flight RPC libraries
# (only `pyarrow.flight` loads them; Substrait stays: pyarrow.lib links it). Byte-code is
# compiled with hash-based invalidation and every mtime set to the epoch: the same wheels give the
# same files.
FROM ${BASE_IMAGE} AS venv
ENV PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY requirements/pipeline.lock /tmp/pipeline.lock
COPY build/train-wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels --no-compile \
        --upgrade setuptools \
    && /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels --require-hashes \
        --no-build-isolation --no-compile -r /tmp/pipeline.lock \
    && /opt/venv/bin/pip uninstall --quiet --yes pip \
    && site=/opt/venv/lib/python3.11/site-packages \
    && rm -rf "$site"/onnxruntime/capi/libonnxruntime.so.* "$site"/onnxruntime/transformers \
        "$site"/onnxruntime/quantization "$site"/onnxruntime/tools \
        "$site"/pyarrow/libarrow_flight.so* "$site"/pyarrow/libarrow_python_flight.so* \
        "$site"/pyarrow/_flight.*.so \
    && find /opt/venv -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
    && find /opt/venv -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' -o -name '*.c' \
        -o -name '*.cpp' -o -name '*.h' \) -delete \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib \
    && find /opt/venv -exec touch -h -d @0 {} +

# --- this project's package (pyproject.toml), apart: a code change rebuilds one small layer -----
# (pip comes back for this throwaway stage only: ensurepip installs it offline)
FROM venv AS package
COPY pyproject.toml /tmp/src/pyproject.toml
COPY pipeline/ /tmp/src/pipeline/
COPY serving/ /tmp/src/serving/
RUN /opt/venv/bin/python -m ensurepip >/dev/null \
    && /opt/venv/bin/python -m pip install --quiet --no-index --no-deps --no-build-isolation \
        --no-compile --prefix /opt/package /tmp/src \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/package \
    && find /opt/package -exec touch -h -d @0 {} +

# --- the image ----------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
COPY build/train-debs/ /tmp/debs/
# git for DVC, MLflow's commit tag and the model card's provenance. A mounted repository belongs to
# another user than the container's: git's safe.directory is set for every path, and a default
# identity lets `dvc exp run` commit its experiment refs (a repository's own config wins).
RUN dpkg --install --force-confold /tmp/debs/*.deb >/dev/null \
    && rm -rf /tmp/debs /var/log/dpkg.log /var/log/apt /var/cache/debconf/*-old /var/lib/dpkg/*-old \
    && git config --system --add safe.directory '*' \
    && git config --system user.name pipeline-train \
    && git config --system user.email pipeline-train@localhost \
    && groupadd --system --gid 10001 train \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin train \
    && install -d -o 10001 -g 10001 /work
COPY --from=venv /opt/venv /opt/venv
COPY --from=package /opt/package/ /opt/venv/
# PYTHONPATH: a repository mounted at /work runs its own pipeline/ and serving/ code, also through
# the `pipeline` command; with nothing mounted the installed package runs. HOME and USER are set
# for any uid (`-u "$(id -u):$(id -g)"` has no passwd entry: MLflow asks for a user name).
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/work HOME=/tmp USER=train \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=true
WORKDIR /work
USER 10001:10001
# No entrypoint: any command runs (`dvc ...`, `pipeline ...`, `dask worker ...`, `bash`).
CMD ["dvc", "repro", "validate"]
