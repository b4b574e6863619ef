"""HopSkipJump: exact query counts within budget, no NaN, a perturbation that never grows."""

from __future__ import annotations

import torch

from advpnml.attacks import HopSkipJump

from ..conftest import CallCounter, accuracy


def test_queries_counted_exactly_and_within_budget(standard_model, mnist5k_test):
    x, y = mnist5k_test.x[:12], mnist5k_test.y[:12]
    counter = CallCounter(standard_model)
    attack = HopSkipJump(0.3, max_queries=500, init_evals=20)
    attack(counter, x, y)
    assert attack.queries.max() <= 500
    assert int(attack.queries.sum()) == sum(counter.batch_sizes), "every input the model saw is one query"


def test_distance_never_grows_and_shrinks(standard_model, mnist5k_test):
    x, y = mnist5k_test.x[:12], mnist5k_test.y[:12]
    attack = HopSkipJump(0.3, max_queries=1500)
    x_adv = attack(standard_model, x, y)
    dists = torch.stack(attack.history)
    finite = torch.isfinite(dists[0])
    assert finite.sum() >= 8
    assert (dists[1:][:, finite] <= dists[:-1][:, finite] + 1e-7).all()
    assert (dists[-1][finite] < dists[0][finite]).float().mean() > 0.8
    assert torch.isfinite(x_adv).all()
    torch.testing.assert_close(attack.distances, dists[-1])


def test_hsja_lowers_accuracy_at_large_eps(standard_model, mnist5k_test):
    x, y = mnist5k_test.x[:24], mnist5k_test.y[:24]
    x_adv = HopSkipJump(0.3, max_queries=1500, stop_at_eps=True)(standard_model, x, y)
    assert accuracy(standard_model, x_adv, y) < accuracy(standard_model, x, y) - 0.4


def test_zero_length_search_gives_no_nan(standard_model, mnist5k_test):
    """A sample already misclassified sits at distance 0: no division by a zero-length interval."""
    x, y = mnist5k_test.x[:6], mnist5k_test.y[:6]
    wrong = (y + 1) % 10  # every sample is 'misclassified' w.r.t. these labels
    attack = HopSkipJump(0.1, max_queries=100)
    x_adv = attack(standard_model, x, wrong)
    assert torch.isfinite(x_adv).all() and torch.isfinite(attack.distances).all()
    with torch.no_grad():
        already = standard_model(x).argmax(1) != wrong
    assert (attack.distances[already] == 0).all() and (attack.queries[already] == 1).all()
