"""The real-side cache (bench/metrics/real_side.py): scores are the same bits with it, cold or warm, in memory or
from disk; a different real set or setting is a miss; the real-only work is really skipped on a hit."""

import numpy as np
import pytest
import torch

from bench.metrics import kid, precision_recall as pr, real_side
from bench.metrics.kid import kid_summary
from bench.metrics.precision_recall import precision_recall, real_radius_of


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(real_side, "ROOT", tmp_path / "real-side-root")
    real_side.forget_memory()
    yield
    real_side.forget_memory()


def _sets(n_r, n_f, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_r, d, generator=g), torch.randn(n_f, d, generator=g) * 1.2 + 0.1


# (n_r, n_f, subsets, size): the shared all-points pass (small sets), and the direct subsets with the variance on
# a subsample (KID_VARIANCE_MAX lowered so the subsample path runs at test size).
@pytest.mark.parametrize("n_r,n_f,subsets,size,cap", [(120, 90, 6, 40, None), (700, 500, 4, 60, 300)])
def test_kid_is_the_same_bits_cold_warm_and_from_disk(monkeypatch, n_r, n_f, subsets, size, cap):
    if cap:
        monkeypatch.setattr("bench.metrics.intervals.KID_VARIANCE_MAX", cap)
    real, fake = _sets(n_r, n_f)
    plain = kid_summary(real, fake, subsets, size, 3, 4)
    calls = []
    original = kid.kernel_sums
    monkeypatch.setattr(kid, "kernel_sums", lambda a, b, *r: calls.append((len(a), len(b))) or original(a, b, *r))
    cold = kid_summary(real, fake, subsets, size, 3, 4, cached=True)
    cold_calls = list(calls)
    warm = kid_summary(real, fake, subsets, size, 3, 4, cached=True)
    real_side.forget_memory()
    disk = kid_summary(real, fake, subsets, size, 3, 4, cached=True)
    assert plain == cold == warm == disk  # exact equality: every key, every bit
    # the real-real pass (all points, or the variance's subsample of `cap`) ran cold, and never on a hit
    real_pass = (cap or n_r,) * 2
    assert real_pass in cold_calls and real_pass not in calls[len(cold_calls):]
    assert len(list((real_side.ROOT / "real-side").glob("*.pt"))) == (2 if cap else 1)


def test_a_different_real_set_or_seed_is_a_miss():
    real, fake = _sets(150, 150)
    first = kid_summary(real, fake, 5, 50, 3, 4, cached=True)
    other = real.clone()
    other[7, 3] += 0.5
    assert kid_summary(other, fake, 5, 50, 3, 4, cached=True) == kid_summary(other, fake, 5, 50, 3, 4)
    assert kid_summary(other, fake, 5, 50, 3, 4, cached=True) != first
    # another subset seed draws other real rows: its own entry, its own (correct) numbers
    assert kid_summary(real, fake, 5, 50, 9, 4, cached=True) == kid_summary(real, fake, 5, 50, 9, 4)


def test_a_tensor_changed_in_place_is_hashed_again():
    real, _ = _sets(50, 1)
    before = real_side.features_hash(real)
    assert real_side.features_hash(real) == before
    real[0, 0] += 1.0
    assert real_side.features_hash(real) != before


def test_precision_recall_radii_from_the_cache_are_the_computed_ones(monkeypatch):
    real, fake = _sets(300, 250)
    plain = precision_recall(fake, real, 3)
    calls = []
    original = pr.knn_radii
    monkeypatch.setattr(pr, "knn_radii", lambda x, k: calls.append(len(x)) or original(x, k))
    radii = real_radius_of(real, 3)
    assert calls == [300] and torch.equal(radii, original(real, 3))
    assert precision_recall(fake, real, 3, real_radius_of(real, 3)) == plain
    real_side.forget_memory()
    assert precision_recall(fake, real, 3, real_radius_of(real, 3)) == plain
    assert calls == [300, 250, 250]  # the real radii were computed once; the fakes' every time
    assert not torch.equal(real_radius_of(real, 5), radii)  # k is part of the key
    np.testing.assert_array_equal(real_radius_of(real, 5).numpy(), original(real, 5).numpy())
