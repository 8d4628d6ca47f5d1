"""Running the desired state in git: Swarm stacks, the HAProxy entry, Kubernetes manifests.

Owners (one module per outside system):

- :mod:`pipeline.deploy.topology` reads ``deploy/topology.yaml`` (the serving shape per
  environment that is not a promotion decision);
- :mod:`pipeline.deploy.stack` renders the Compose-spec stack file (pure, deterministic);
- :mod:`pipeline.deploy.haproxy` renders the entry's ``haproxy.cfg`` and its offline build
  context from Debian's package;
- :mod:`pipeline.deploy.swarm` is the only module that talks to Docker Swarm, through the
  docker CLI (see its docstring for why the CLI and not the SDK);
- :mod:`pipeline.deploy.reconcile` diffs, applies, verifies and reports; :mod:`.status` compares
  without changing anything; :mod:`.watch` repeats reconcile and backs off from failures;
- :mod:`pipeline.deploy.autoscale` is the scaling policy (pure); :mod:`.autoscaler` its loop
  (`pipeline autoscale`);
- :mod:`pipeline.deploy.k8s` renders Kustomize bases/overlays and Argo CD Applications.
"""
