"""Sticky assignment: which variant a user sees, as a pure function of (experiment id, user key).

The bucket is ``crc32("<experiment id>:<user key>") mod 100``: the same number HAProxy's
``crc32`` converter and ``mod(100)`` give (HAProxy's crc32 equals :func:`zlib.crc32`), so the
split survives proxy restarts and scaling, and anyone can recompute it offline from the log.
A share of ``s`` % sends buckets ``0 .. s-1`` to the candidate (B): raising the share only adds
buckets to B, so a ramp never moves a user from B back to A. The experiment id is the salt: a
new experiment reshuffles users, so the last experiment's B users are not this one's.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Literal

__all__ = ["BUCKETS", "Variant", "bucket", "bucket_map", "user_hash", "variant"]

BUCKETS = 100  # the split moves in 1 % steps
Variant = Literal["a", "b"]


def bucket(experiment_id: str, user_key: str) -> int:
    """The user's bucket, 0..99 (HAProxy: ``str(id:),concat(,txn.user,),crc32,mod(100)``)."""
    return zlib.crc32(f"{experiment_id}:{user_key}".encode()) % BUCKETS


def variant(bucket_: int, share: int) -> Variant:
    """B when the bucket is below the candidate's share (in %), else A."""
    if not 0 <= bucket_ < BUCKETS:
        raise ValueError(f"bucket {bucket_} is outside 0..{BUCKETS - 1}")
    if not 0 <= share <= BUCKETS:
        raise ValueError(f"share {share} is outside 0..{BUCKETS}")
    return "b" if bucket_ < share else "a"


def bucket_map(share: int) -> str:
    """The proxy's map file: one line per bucket, ``<bucket> <variant>_<share>``.

    The share rides along in the value so that every exposure records the split it was
    assigned under (the analysis compares like with like after a ramp); HAProxy takes the
    variant with ``field(1,_)`` and the share with ``field(2,_)``.
    """
    return "".join(f"{b} {variant(b, share)}_{share}\n" for b in range(BUCKETS))


def user_hash(user_key: str) -> str:
    """What the logs keep of a user key: 16 hex digits of its sha256 (the serving image
    computes the same in :mod:`serving.experiment`; a unit test holds the two together)."""
    return hashlib.sha256(user_key.encode()).hexdigest()[:16]
