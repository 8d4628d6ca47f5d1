"""Stage `containerize`: the validated model and the serving app as a smoke-checked image.

1. wheels: ``build/wheels`` holds what ``requirements/serving.lock`` pins, for CPython 3.11 on
   manylinux x86-64, downloaded on the host (a container does not trust the host's CA, and the
   build runs with no network); downloaded again only when the lock changes;
2. environment: the model card's runtime picks the lock the image installs: a model ONNX
   serves gets ``requirements/serving-onnx.lock`` (onnxruntime, no scikit-learn or scipy), one
   scikit-learn serves gets ``requirements/serving.lock`` (both runtimes);
3. base: ``image.base`` if present or pullable, else ``image.fallback_base`` (`make base-image`);
4. tag: ``{image.name}:{content hash}`` of every file the image gets (the wheels are pinned by
   the lock's hashes), the build arguments, the base image's id and ``image.labels``; an
   existing tag skips the build;
5. build (OCI and ``ml.*`` labels), size budget ``image.max_size_mb``, smoke check (run, wait for
   ready, one golden request answered by the promised runtime, and the image's Python holds
   exactly that environment's runtime libraries); a failed image loses its tag;
6. ``build/image.json`` (:class:`pipeline.artifacts.ImageRecord`): id, tags, labels, size, timings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import artifacts, config, console, provenance
from pipeline.config import Params
from pipeline.errors import ConfigError, ImageError
from pipeline.image import context
from pipeline.image.engine import Engine
from pipeline.image.probe import smoke_check
from pipeline.image.wheels import resolve_wheels, wheels_for

log = logging.getLogger("pipeline")


def containerize(params: Params) -> artifacts.ImageRecord:
    image = params.image
    card = artifacts.read_card()
    golden = artifacts.read_golden()
    holdout = artifacts.read_metrics(artifacts.HOLDOUT_METRICS)
    reserved = sorted(k for k in image.labels if k.startswith("ml."))
    if reserved:
        raise ConfigError(f"params.yaml: image.labels: {reserved}: the ml.* labels are the stage's")
    args = context.build_args(card.runtime)
    lock = Path(args["SERVING_LOCK"])
    files = context.context_files(lock=lock)
    wheels = wheels_for(lock, wheel_dir=resolve_wheels())
    engine = Engine.connect()
    engine_name = engine.describe()
    log.info("container engine: %s", engine_name)
    base = engine.resolve_base(base=image.base, fallback=image.fallback_base)
    digest = context.content_hash(files, base_id=base.id, labels=image.labels, build_args=args)
    ref = f"{image.name}:{digest[:12]}"
    built = engine.image(ref)
    summary = None
    if built is not None:
        log.info("%s exists (same model, code, lock, Dockerfile and base): build skipped", ref)
    else:
        labels = context.image_labels(
            image,
            card,
            holdout,
            digest=digest,
            base=base,
            source=context.source_url(context.git_remote()),
            revision=provenance.git_commit(),
        )
        labels |= image.labels
        entries: dict[str, Path | bytes] = dict(files)
        entries |= {f"build/wheels/{p.name}": p for p in wheels}
        entries["Dockerfile"] = context.DOCKERFILE.read_bytes() + context.label_instruction(labels)
        log.info(
            "building %s on %s (%s): %s runtime, %s",
            ref,
            base.ref,
            base.id[:19],
            card.runtime,
            lock,
        )
        with context.tar_context(entries) as tar:
            build = engine.build(tar, tag=ref, buildargs={"BASE_IMAGE": base.ref, **args})
        built = engine.image(ref)
        if built is None:
            raise ImageError(f"the engine reported a build but has no image {ref}")
        summary = artifacts.BuildSummary(
            seconds=round(build.seconds, 2), steps=build.steps, cached=build.cached
        )
        log.info(
            "built %s in %.1f s; %d of %d steps cached",
            ref,
            build.seconds,
            len(build.cached),
            build.steps,
        )
    size_mb = built.size / 1e6
    if size_mb > image.max_size_mb:
        engine.untag(ref)
        raise ImageError(
            f"{ref} is {size_mb:.0f} MB, above image.max_size_mb = {image.max_size_mb:g} MB: "
            f"trim {lock} (its .in file, then `make lock`) or raise the budget in params.yaml"
        )
    try:
        checked = smoke_check(
            engine,
            ref,
            card=card,
            golden=golden,
            timeout=image.smoke_timeout_s,
            tighter=params.contract.probability_tolerance,
        )
    except ImageError:
        engine.untag(ref)
        raise
    engine.tag(built.id, f"{image.name}:latest")
    record = artifacts.ImageRecord(
        image=ref,
        id=built.id,
        tags=[ref, f"{image.name}:latest"],
        labels=built.labels,
        size_bytes=built.size,
        size_mb=round(size_mb, 1),
        max_size_mb=image.max_size_mb,
        content_hash=digest,
        base=artifacts.BaseImage(ref=base.ref, id=base.id, fallback=base.fallback),
        build=summary,
        smoke=checked,
        engine=engine_name,
    )
    artifacts.write_image(record)
    log.info(
        "%s: %.0f MB (budget %g MB), ready in %.2f s, golden row answered; wrote %s",
        ref,
        size_mb,
        image.max_size_mb,
        checked["time_to_ready_s"],
        artifacts.IMAGE,
    )
    return record


def main() -> None:
    console.run_stage(lambda: containerize(config.load_params()))


if __name__ == "__main__":
    main()
