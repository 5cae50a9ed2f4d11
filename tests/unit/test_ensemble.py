"""Ensemble votes on hand-made cases."""

import torch

from kdedge.metrics.ensemble import best_k_accuracies, majority_vote, mean_probability_vote


def P(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_mean_probability_vote_by_hand():
    a = P([0.6, 0.4], [0.1, 0.9])
    b = P([0.3, 0.7], [0.2, 0.8])
    # sample 0: mean (0.45, 0.55) -> 1 although a says 0; sample 1: -> 1
    assert mean_probability_vote([a, b]).tolist() == [1, 1]


def test_majority_vote_and_tie_break_by_hand():
    a = P([0.9, 0.1, 0.0], [0.5, 0.4, 0.1])
    b = P([0.2, 0.8, 0.0], [0.1, 0.3, 0.6])
    c = P([0.6, 0.3, 0.1], [0.0, 0.45, 0.55])
    # sample 0: votes 0,1,0 -> 0. sample 1: votes 0,2,2 -> 2
    assert majority_vote([a, b, c]).tolist() == [0, 2]
    # a 1-1 tie: classes 0 and 1 each get one vote; mean probs (0.55, 0.45) -> 0
    assert majority_vote([P([0.9, 0.1]), P([0.2, 0.8])]).tolist() == [0]
    assert majority_vote([P([0.6, 0.4]), P([0.05, 0.95])]).tolist() == [1]  # mean (0.325, 0.675)


def test_best_k_ranks_on_validation_only():
    labels = torch.tensor([0, 1])
    good = P([0.9, 0.1], [0.1, 0.9])
    bad = P([0.1, 0.9], [0.9, 0.1])
    rows = best_k_accuracies([bad, good], labels, [bad, good], labels)
    assert rows[0] == {"k": 1, "members": [1], "mean_probability": 1.0, "majority": 1.0}
    assert rows[1]["members"] == [1, 0]
