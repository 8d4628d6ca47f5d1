"""A/B experiments: a challenger on a sticky share of users, per-variant evidence, a decision.

- :mod:`.assignment` the bucket of a user (``crc32("<experiment id>:<user key>") % 100``, as the
  HAProxy entry computes it) and the 100-line map of buckets to variants;
- :mod:`.stats` the tests, pure functions of counts: sample-ratio mismatch, guardrails, the
  two-proportion z-test, its sample size, mSPRT;
- :mod:`.record` the ``experiment:`` block of ``deploy/<env>.yaml`` (a typed record);
- :mod:`.decision` the ordered checks that end in ``promote | keep | continue``;
- :mod:`.lifecycle` ``pipeline ab start | ramp | stop | conclude`` (the only writers);
- :mod:`.outcomes` per-user outcomes from a CSV/Parquet or from exposure and feedback logs;
- :mod:`.analysis` what ``pipeline ab decide`` reads (tables, logs, Swarm, Prometheus);
- :mod:`.prometheus` the guardrail numbers from Prometheus' HTTP API (its only client);
- :mod:`.report` the cumulative-lift plot (PNG + HTML).

On Swarm and Kubernetes the experiment is rendered by :mod:`pipeline.deploy.split`,
:mod:`pipeline.deploy.haproxy_runtime` (HAProxy's runtime API), :mod:`pipeline.deploy.monitor`
(the experiment's Prometheus) and :mod:`pipeline.deploy.k8s_split`: they import only the leaf
modules :mod:`.record` and :mod:`.assignment` from here.

This ``__init__`` imports nothing, so :mod:`pipeline.release.state` can import the record
without pulling in the lifecycle (which imports the release package).
"""
