"""Probing a running model server over HTTP: readiness and one golden request.

Used by the containerize stage's smoke check and by `pipeline contract-test`; standard library
only, so it runs anywhere the pipeline does.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from pipeline.errors import ImageError
from pipeline.image.engine import Container, Engine
from serving.card import GoldenRow, GoldenSet, ModelCard
from serving.protocols.oip import request_tensors
from serving.runtime import declared_tolerance, regression_error

log = logging.getLogger("pipeline")
PORT = 8080


REQUEST_TIMEOUT_S = 5.0  # one readiness poll; the golden requests get the rest of the budget


class SmokeFailed(Exception):
    """A smoke-check step failed; the caller adds the container's log."""


def smoke_check(
    engine: Engine,
    ref: str,
    *,
    card: ModelCard,
    golden: GoldenSet,
    timeout: float,
    tighter: float | None = None,
) -> dict[str, Any]:
    """Run ``ref``, wait until ready, send the first golden row, compare with the validated
    answer; any failure raises with the container's log."""
    started = time.monotonic()
    with engine.run(ref, port=PORT) as container:
        url = f"http://127.0.0.1:{container.host_port}"
        try:
            ready = wait_ready(container, url, started=started, timeout=timeout)
            # The golden requests get what is left of the budget (at least a poll's 5 s): the
            # first answers of a freshly started model can be slow on a loaded CI machine.
            left = max(REQUEST_TIMEOUT_S, timeout - (time.monotonic() - started))
            answer = _golden_request(
                url, card=card, row=golden.rows[0], tighter=tighter, timeout=left
            )
            answer["libraries"] = runtime_libraries(container, runtime=card.runtime)
        except SmokeFailed as exc:
            raise ImageError(
                f"smoke check of {ref} failed: {exc}\n--- container log ---\n{container.logs()}"
            ) from None
    answer.update(time_to_ready_s=round(ready, 3), seconds=round(time.monotonic() - started, 3))
    log.info(
        "smoke check: ready after %.2f s, golden row answered by %s; the image holds %s",
        ready,
        answer["runtime"],
        sorted(name for name, present in answer["libraries"].items() if present),
    )
    return answer


#: The runtime libraries each environment must hold (True) or must not (False): an ONNX image
#: ships no scikit-learn or scipy, the scikit-learn image (the fallback) holds both runtimes.
RUNTIME_LIBRARIES: dict[str, dict[str, bool]] = {
    "onnx": {"onnxruntime": True, "sklearn": False, "scipy": False},
    "sklearn": {"onnxruntime": True, "sklearn": True, "scipy": True},
}
_FIND = "import importlib.util as u, json; print(json.dumps({m: bool(u.find_spec(m)) for m in %r}))"


def runtime_libraries(container: Container, *, runtime: str) -> dict[str, bool]:
    """Which runtime libraries the image's Python can import, checked against what the
    ``runtime``'s environment must hold (:data:`RUNTIME_LIBRARIES`)."""
    want = RUNTIME_LIBRARIES[runtime]
    try:
        code, output = container.execute(["/opt/venv/bin/python", "-c", _FIND % sorted(want)])
    except ImageError as exc:
        raise SmokeFailed(str(exc)) from None
    try:
        found = {str(k): bool(v) for k, v in json.loads(output.splitlines()[-1]).items()}
    except (ValueError, IndexError, AttributeError):
        raise SmokeFailed(
            f"could not list the image's libraries (exit {code}): {output[-300:]}"
        ) from None
    wrong = sorted(name for name, present in want.items() if found.get(name) != present)
    if code != 0 or wrong:
        raise SmokeFailed(
            f"the {runtime} environment must hold "
            f"{sorted(n for n, p in want.items() if p)} and not "
            f"{sorted(n for n, p in want.items() if not p)}; the image holds {found}"
        )
    return found


def wait_ready(container: Container, url: str, *, started: float, timeout: float) -> float:
    last = "no answer yet"
    while time.monotonic() - started < timeout:
        state = container.state()
        if not state.get("Running"):
            raise SmokeFailed(f"the container exited (code {state.get('ExitCode')})")
        try:
            status, body = _http(f"{url}/v2/health/ready")
        except SmokeFailed as exc:
            status, body = 0, str(exc)
        if status == 200:
            return time.monotonic() - started
        if isinstance(body, dict) and body.get("status") == "failed":  # never going to be ready
            raise SmokeFailed(f"the model was refused: {body.get('message')}")
        last = f"HTTP {status} {body}" if status else str(body)
        time.sleep(0.1)
    raise SmokeFailed(f"not ready within the {timeout:g} s budget; last: {last}")


def _golden_request(
    url: str, *, card: ModelCard, row: GoldenRow, tighter: float | None, timeout: float
) -> dict[str, Any]:
    runtime = str(_ok(f"{url}/metadata", timeout=timeout)["runtime"]["name"])
    if runtime != card.runtime:
        raise SmokeFailed(f"serves with {runtime}, but the image promises {card.runtime}")
    tolerance = declared_tolerance(runtime, tighter=tighter, task=card.task)
    records = {"dataframe_records": [row.inputs]}
    labels = _ok(f"{url}/invocations", records, timeout=timeout)["predictions"]
    tensors = request_tensors(card.features, [row.inputs])
    infer = _ok(f"{url}/v2/models/{card.model_name}/infer", {"inputs": tensors}, timeout=timeout)
    outputs = {o["name"]: o["data"] for o in infer["outputs"]}
    if card.regression:
        diff = max(
            regression_error(labels, [row.label]),
            regression_error(outputs.get("prediction", [float("nan")]), [row.label]),
        )
        if not diff <= tolerance:
            raise SmokeFailed(
                f"predictions {labels} and {outputs.get('prediction')}, expected {row.label} "
                f"within the {runtime} relative tolerance {tolerance:g}"
            )
        return {
            "runtime": runtime,
            "label": row.label,
            "max_abs_diff": diff,
            "tolerance": tolerance,
        }
    if labels != [row.label] or outputs.get("label") != [row.label]:
        raise SmokeFailed(f"labels {labels} and {outputs.get('label')}, expected {row.label}")
    pairs = zip(outputs["probabilities"], row.probabilities, strict=True)
    diff = max(abs(float(a) - float(b)) for a, b in pairs)
    if not diff <= tolerance:
        raise SmokeFailed(
            f"probabilities off by {diff:g}, above the {runtime} tolerance {tolerance:g}"
        )
    return {"runtime": runtime, "label": row.label, "max_abs_diff": diff, "tolerance": tolerance}


def _ok(url: str, body: dict[str, Any] | None = None, *, timeout: float) -> Any:
    status, answer = _http(url, body, timeout=timeout)
    if status != 200:
        raise SmokeFailed(f"{url}: HTTP {status} {answer}")
    return answer


def _http(
    url: str, body: dict[str, Any] | None = None, *, timeout: float = REQUEST_TIMEOUT_S
) -> tuple[int, Any]:
    """(status, JSON body, or its text when not JSON); no answer at all raises."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, http.client.HTTPException) as exc:
        raise SmokeFailed(f"{url}: {type(exc).__name__}: {exc}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw[:300].decode(errors="replace")
