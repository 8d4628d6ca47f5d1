"""Sticky assignment as properties: uniform buckets, ramps only add users to B, a new id
reshuffles, and the proxy's map says the same as the Python function."""

from __future__ import annotations

import random
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from pipeline.ab.assignment import BUCKETS, bucket, bucket_map, user_hash, variant

IDS = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,30}", fullmatch=True)
KEYS = st.text(min_size=1, max_size=64)
USERS = 10_000


def interval(n: int, p: float, confidence: float = 0.999) -> tuple[float, float]:
    low, high = sps.binom.interval(confidence, n, p)
    return float(low), float(high)


def user_ids(kind: int, seed: int) -> list[str]:
    """10,000 ids of a realistic kind: sequential numbers, prefixed numbers or UUIDs."""
    if kind == 0:
        return [str(seed * USERS + i) for i in range(USERS)]
    if kind == 1:
        return [f"user-{seed}-{i}" for i in range(USERS)]
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(USERS)]


@settings(max_examples=40, derandomize=True, deadline=None)
@given(
    experiment_id=IDS,
    share=st.integers(min_value=1, max_value=99),
    kind=st.integers(0, 2),
    seed=st.integers(0, 10**6),
)
def test_ten_thousand_ids_land_in_b_within_the_binomial_interval(
    experiment_id: str, share: int, kind: int, seed: int
) -> None:
    in_b = sum(variant(bucket(experiment_id, u), share) == "b" for u in user_ids(kind, seed))
    low, high = interval(USERS, share / BUCKETS)
    assert low <= in_b <= high, f"{in_b} of {USERS} in B at {share} %: outside [{low}, {high}]"


@settings(max_examples=100, deadline=None)
@given(experiment_id=IDS, key=KEYS, shares=st.lists(st.integers(0, 99), min_size=2, max_size=6))
def test_a_ramp_never_moves_a_user_from_b_back_to_a(
    experiment_id: str, key: str, shares: list[int]
) -> None:
    b = bucket(experiment_id, key)
    seen_b = False
    for share in sorted(shares):
        now_b = variant(b, share) == "b"
        assert now_b or not seen_b, f"user {key!r} left B when the share rose to {share}"
        seen_b = seen_b or now_b


@settings(max_examples=20, derandomize=True, deadline=None)
@given(first=IDS, second=IDS, seed=st.integers(0, 10**6))
def test_a_new_experiment_id_reshuffles_who_is_in_b(first: str, second: str, seed: int) -> None:
    if first == second:
        second += "-2"
    users = user_ids(2, seed)
    in_first = {u for u in users if variant(bucket(first, u), 50) == "b"}
    both = sum(variant(bucket(second, u), 50) == "b" for u in in_first)
    low, high = interval(len(in_first), 0.5)
    assert low <= both <= high, (
        f"{both} of the {len(in_first)} B users of {first!r} are B again in {second!r}: the "
        "new id did not reshuffle them"
    )


@settings(max_examples=100, deadline=None)
@given(experiment_id=IDS, key=KEYS)
def test_the_bucket_is_haproxys_crc32_of_id_colon_key_mod_100(experiment_id: str, key: str) -> None:
    expected = zlib.crc32(experiment_id.encode() + b":" + key.encode()) % 100
    assert bucket(experiment_id, key) == expected
    assert bucket(experiment_id, key) == bucket(experiment_id, key)  # a pure function


@given(share=st.integers(0, 99))
def test_the_map_file_has_one_line_per_bucket_and_agrees_with_variant(share: int) -> None:
    lines = bucket_map(share).splitlines()
    assert len(lines) == BUCKETS
    for number, line in enumerate(lines):
        key, value = line.split(" ")
        assert int(key) == number
        assert value == f"{variant(number, share)}_{share}"
    assert sum(line.split()[1].startswith("b") for line in lines) == share


def test_a_user_key_is_logged_as_16_hex_digits_of_its_sha256() -> None:
    assert user_hash("alice") == "2bd806c97f0e00af"
    assert len({user_hash(f"u{i}") for i in range(10_000)}) == 10_000
