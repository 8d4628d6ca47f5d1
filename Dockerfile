# The serving image: the locked serving runtime, the serving/ package and the validated model.
#
# Built by the `containerize` stage (pipeline/image/) with no network: every wheel comes from
# build/wheels, resolved on the host from requirements/serving.lock (`make wheels`). By hand:
#   make wheels && docker build --build-arg BASE_IMAGE=local/python:3.11-slim-bookworm -t NAME .
# The stage picks the environment from the model card: a model ONNX serves gets
# SERVING_LOCK=requirements/serving-onnx.lock (onnxruntime only: no scikit-learn, no scipy) and
# SERVING_RUNTIME=onnx; otherwise the full lock, both runtimes, SERVING_RUNTIME=sklearn.
# Layers go from least to most often changed: runtime, then code, then the model, so a code-only
# or model-only change rebuilds only the top layers. Classic builder compatible (no RUN --mount).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- runtime: a venv holding exactly the chosen lock, installed offline and made reproducible ----
FROM ${BASE_IMAGE} AS runtime
ARG SERVING_LOCK=requirements/serving.lock
ENV PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0
COPY ${SERVING_LOCK} /tmp/serving.lock
COPY build/wheels/ /tmp/wheels/
# Not served, so not shipped: pip, tests, type stubs and C sources; onnxruntime's C-API library
# (its Python binding links the runtime statically and never loads it) and its offline model
# tools (transformers/quantization/tools: optimisers, not inference). Byte-code is compiled with
# hash-based invalidation and every mtime set to the epoch: the same wheels give the same files.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels --require-hashes \
        --no-compile -r /tmp/serving.lock \
    && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
    && ort=/opt/venv/lib/python3.11/site-packages/onnxruntime \
    && rm -rf "$ort"/capi/libonnxruntime.so.* "$ort"/transformers "$ort"/quantization "$ort"/tools \
    && find /opt/venv -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
    && find /opt/venv -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' -o -name '*.c' \
        -o -name '*.cpp' -o -name '*.h' \) -delete \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib \
    && find /opt/venv -exec touch -h -d @0 {} +

# --- the image ----------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 serving \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin serving
COPY --from=runtime /opt/venv /opt/venv
ARG SERVING_RUNTIME=auto
# onnxruntime (1.2x and later) uploads usage telemetry from Linux too, starts an uploader thread
# for it and logs a non-JSON warning when it cannot store a device id (this user has no home):
# off (it also starts ~0.1 s sooner: 8 alternating starts, median 1.09 -> 1.00 s).
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/opt/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SERVING_HOST=0.0.0.0 SERVING_PORT=8080 SERVING_RUNTIME=${SERVING_RUNTIME} \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /opt/app
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
# Healthy only once the model is verified (sha256, golden rows) and warm: /v2/health/ready.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('SERVING_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["/opt/venv/bin/python", "-m", "serving", "/opt/model"]
# serving/ is the image's only Python (it imports nothing of the pipeline package)
COPY serving/ /opt/app/serving/
COPY models/ /opt/model/
COPY reports/golden.json metrics/holdout.json /opt/model/
