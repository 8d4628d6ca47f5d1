"""`pipeline reconcile | status | render | autoscale`: deploy (pipeline/deploy; docs/deploy.md). The
commands are registered on the top-level app by :mod:`pipeline.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import config
from pipeline.cli.common import ParamsFile
from pipeline.cli.common import environment as _environment
from pipeline.cli.common import run as _run
from pipeline.console import out, setup_logging
from pipeline.errors import ConfigError

Topology = Annotated[Path, typer.Option("--topology", help="the serving shape per environment")]
DeployEnv = Annotated[str, typer.Option("--env", help="staging or production")]


def _desired(env: str, topology: Path, params_file: Path | None, *, build_entry: bool) -> Any:
    """Settings, the environment's topology, and a function rendering its desired state (with
    ``params_file`` None, the entry image is the rendered or running one: nothing is built)."""
    from pipeline.deploy import reconcile as deploy
    from pipeline.deploy import status as deploy_status
    from pipeline.deploy.swarm import Swarm
    from pipeline.deploy.topology import load_topology

    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    shape = _run(lambda: load_topology(topology).get(name, path=topology))
    swarm = _run(Swarm)
    if params_file is None:

        def known() -> Any:
            entry = deploy_status.rendered_entry_image(
                settings.deploy_dir, name, swarm, shape.stack
            )
            return deploy.desired_state(
                settings, shape, env=name, image=None, entry_image=entry, swarm=swarm
            )

        return settings, shape, known
    params = _run(lambda: config.load_params(params_file))

    def rendered() -> Any:
        return deploy.desired_state(
            settings, shape, env=name, image=params.image, build_entry=build_entry, swarm=swarm
        )

    return settings, shape, rendered


def reconcile(
    env: DeployEnv,
    dry_run: Annotated[bool, typer.Option(help="show what would change; apply nothing")] = False,
    watch: Annotated[bool, typer.Option(help="keep reconciling (drift is reverted)")] = False,
    interval: Annotated[float, typer.Option(help="seconds between --watch passes")] = 30.0,
    topology: Topology = Path("deploy/topology.yaml"),
    report: Annotated[
        Path | None, typer.Option(help="outcome JSON; default build/deploy/<env>.reconcile.json")
    ] = None,
    params_file: ParamsFile = Path("params.yaml"),
) -> None:
    """Make the Swarm stack run deploy/<env>.yaml: render, diff, `docker stack deploy`, verify.

    Exit 10 when Swarm rolled the update back (then `pipeline rollback --env E`), 9 when it did
    not converge otherwise; the table says which service runs what."""
    from pipeline.console import err, explain, print_table
    from pipeline.deploy import reconcile as deploy
    from pipeline.deploy import watch as deploy_watch
    from pipeline.deploy.swarm import Swarm
    from pipeline.errors import PipelineError, RolloutFailed

    setup_logging()
    settings, shape, render = _desired(env, topology, params_file, build_entry=not dry_run)
    swarm = _run(Swarm)
    path = report or Path("build/deploy") / f"{env}.reconcile.json"
    failed_file = Path("build/deploy") / f"{env}.failed.json"

    def show(result: Any) -> None:
        outcome = result.outcome if isinstance(result, RolloutFailed) else result
        deploy.write_report(outcome, path)
        rows = [
            (r.service, r.desired, r.running, r.state if r.ok else f"[red]{r.state}[/red]", r.error)
            for r in outcome.rows
        ]
        columns = ("service", "desired", "running", "state", "task error")
        print_table("rollout", columns, rows, console=out if outcome.ok else err)
        code = outcome.deploy_exit_code
        verdict = "ok" if outcome.ok else ("ROLLED BACK" if outcome.rolled_back else "FAILED")
        out.print(
            f"reconcile {env}: {verdict} in {outcome.seconds:.1f} s; docker stack deploy exit "
            f"code {code if code is not None else '- (not run)'}; report {path}",
            soft_wrap=True,
        )

    if watch:
        if dry_run:
            explain(ConfigError("--watch applies what it finds: drop --dry-run"))
            raise typer.Exit(ConfigError.exit_code)
        out.print(f"watching {env} every {interval:g} s (Ctrl-C stops)")
        try:
            deploy_watch.watch(
                lambda: _run(render),
                swarm,
                deploy_dir=settings.deploy_dir,
                timeout=shape.update.timeout_s,
                interval=interval,
                report=show,
                failed_file=failed_file,
            )
        except KeyboardInterrupt:
            return
        return
    desired = _run(render)
    try:
        with deploy_watch.exclusive(env):
            outcome = deploy.reconcile(
                swarm,
                desired,
                deploy_dir=settings.deploy_dir,
                timeout=shape.update.timeout_s,
                dry_run=dry_run,
            )
    except RolloutFailed as exc:
        show(exc)
        deploy_watch.record_failed(failed_file, desired, exc.outcome.reason() or str(exc))
        explain(exc)
        raise typer.Exit(exc.exit_code) from None
    except PipelineError as exc:
        explain(exc)
        raise typer.Exit(exc.exit_code) from None
    plan_rows = [
        (
            desired.service(c.service),
            c.action,
            ", ".join(c.fields),
            deploy.short_image(c.live_image) if c.live_image else "-",
            deploy.short_image(c.desired_image),
        )
        for c in outcome.changes
    ]
    columns = ("service", "action", "fields", "live", "desired")
    print_table(f"{env}: desired (git) vs live", columns, plan_rows, console=out)
    if dry_run:
        out.print(f"dry run: nothing applied; would write {outcome.stack_file}", soft_wrap=True)
        return
    if not outcome.applied:
        deploy.write_report(outcome, path)
        out.print(f"reconcile {env}: in sync ({desired.model_digest}); nothing applied")
        return
    show(outcome)


def status(
    env: DeployEnv,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    markdown: Annotated[
        Path | None, typer.Option(help="also append a Markdown table here ($GITHUB_STEP_SUMMARY)")
    ] = None,
    topology: Topology = Path("deploy/topology.yaml"),
) -> None:
    """Desired (git) vs live (Swarm): digest, model version, replicas, last update, drift.

    Exit 1 when they differ (drift, a pending update, nothing deployed)."""
    import json
    from dataclasses import asdict

    from pipeline.console import print_table
    from pipeline.deploy import status as deploy_status
    from pipeline.deploy.swarm import Swarm

    setup_logging("WARNING")
    _settings, _shape, render = _desired(env, topology, None, build_entry=False)
    swarm = _run(Swarm)
    found = _run(lambda: deploy_status.status(swarm, _run(render)))
    if markdown is not None:
        with markdown.open("a") as handle:
            handle.write(deploy_status.status_markdown(found))
    if as_json:
        typer.echo(json.dumps(asdict(found), indent=2))
        raise typer.Exit(0 if found.in_sync else 1)
    live = found.live_digest or "nothing deployed"
    rows = [
        ("desired (git)", f"{found.desired_digest} (model version {found.desired_version})"),
        ("live (Swarm)", f"{live} (model version {found.live_version or '-'})"),
        ("running", ", ".join(found.running_digests) or "-"),
        ("replicas ready", f"{found.replicas_ready}/{found.replicas_desired}"),
        ("last update", f"{found.update_state or '-'} {found.update_message}".strip()),
        ("drift", "; ".join(found.drift) or "none"),
        ("in sync", "yes" if found.in_sync else f"no: `pipeline reconcile --env {env}`"),
    ]
    title = f"{env} ({found.stack})"
    print_table(title, ("what", "value"), rows, console=out, show_header=False)
    if not found.in_sync:
        raise typer.Exit(1)


def autoscale(
    env: DeployEnv,
    once: Annotated[bool, typer.Option(help="one decision (after one window), then exit")] = False,
    topology: Topology = Path("deploy/topology.yaml"),
    log_file: Annotated[
        Path | None,
        typer.Option("--log", help="JSON lines; default build/deploy/<env>.autoscale.jsonl"),
    ] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(help="Prometheus text file; default build/deploy/<env>.autoscale.prom"),
    ] = None,
) -> None:
    """Scale the model service on the request rate at the entry (topology `autoscale:`).

    Up at once, down one replica per quiet stabilisation window; never below min_replicas (no
    scale to zero). Each decision is a JSON line on stdout and in --log."""
    import json

    from pipeline.deploy.autoscaler import Autoscaler, Files
    from pipeline.deploy.swarm import Swarm
    from pipeline.deploy.topology import load_topology

    setup_logging()
    name = _run(lambda: _environment(env))
    shape = _run(lambda: load_topology(topology).get(name, path=topology))
    swarm = _run(Swarm)
    _run(swarm.ensure_manager)
    files = Files.default(name)
    if metrics is not None:
        files = Files(metrics=metrics, state=files.state)
    path = log_file or Path("build/deploy") / f"{name}.autoscale.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True)
        with path.open("a") as handle:
            handle.write(line + "\n")
        typer.echo(line)

    scaler = _run(lambda: Autoscaler(swarm=swarm, env=name, shape=shape, files=files, emit=emit))
    try:
        _run(lambda: scaler.run(once=once))
    except KeyboardInterrupt:
        return


render_app = typer.Typer(no_args_is_help=True, help="Render deployment manifests.")


@render_app.command("k8s")
def render_k8s(
    env: Annotated[
        list[str] | None, typer.Option("--env", help="environment(s); default: every one")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="where the manifests go")] = Path(
        "deploy/k8s"
    ),
    topology: Topology = Path("deploy/topology.yaml"),
    repo_url: Annotated[
        str, typer.Option(help="git URL Argo CD syncs from (default: the origin remote)")
    ] = "",
) -> None:
    """Kustomize base + per-environment overlays and Argo CD Applications (image by digest)."""
    from pipeline.deploy import k8s
    from pipeline.deploy.topology import load_topology

    setup_logging()
    settings = _run(config.load_settings)
    shapes = _run(lambda: load_topology(topology))
    names: list[str] | None = None
    if env:
        names = [str(_run(lambda n=n: _environment(n))) for n in env]  # type: ignore[misc]
    written = _run(
        lambda: k8s.write(settings, shapes, out_dir=out_dir, envs=names, repo_url=repo_url)
    )
    out.print(f"wrote {len(written)} files under {out_dir}")


@render_app.command("podman")
def render_podman(
    env: DeployEnv,
    out_dir: Annotated[Path, typer.Option("--out", help="where the manifest goes")] = Path(
        "deploy/podman"
    ),
    topology: Topology = Path("deploy/topology.yaml"),
) -> None:
    """A single-host manifest for `podman kube play` (one replica, the entry port; no rollout)."""
    from pipeline.deploy import k8s
    from pipeline.deploy.topology import load_topology

    setup_logging()
    settings = _run(config.load_settings)
    name = _run(lambda: _environment(env))
    shapes = _run(lambda: load_topology(topology))
    path = _run(lambda: k8s.write_podman(settings, shapes, env=name, out_dir=out_dir))
    port = shapes.get(name).entry.port
    out.print(f"wrote {path}: `podman kube play {path}` serves on port {port}")
