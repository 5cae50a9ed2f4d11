"""Ensemble votes over several models' class probabilities (seed 001: student ensembles)."""

from __future__ import annotations

import torch


def mean_probability_vote(probs: list[torch.Tensor]) -> torch.Tensor:
    """Class with the highest average probability across members. probs: list of [N, C]."""
    return torch.stack(probs).mean(0).argmax(1)


def majority_vote(probs: list[torch.Tensor]) -> torch.Tensor:
    """Class predicted by most members; a tie goes to the tied class with the highest mean probability."""
    stacked = torch.stack(probs)                                  # [M, N, C]
    n_classes = stacked.shape[2]
    votes = torch.nn.functional.one_hot(stacked.argmax(2), n_classes).sum(0)  # [N, C]
    tied = votes == votes.max(1, keepdim=True).values
    mean = stacked.mean(0).masked_fill(~tied, float("-inf"))
    return mean.argmax(1)


def best_k_accuracies(val_probs: list[torch.Tensor], val_labels: torch.Tensor, test_probs: list[torch.Tensor],
                      test_labels: torch.Tensor) -> list[dict]:
    """Members ranked by validation accuracy; for k = 1..M the test accuracy of the top-k ensemble
    (ranking on validation, so the choice of members never looks at test)."""
    val_acc = [(p.argmax(1) == val_labels).double().mean().item() for p in val_probs]
    order = sorted(range(len(val_probs)), key=lambda i: -val_acc[i])
    rows = []
    for k in range(1, len(order) + 1):
        members = [test_probs[i] for i in order[:k]]
        rows.append({
            "k": k, "members": order[:k],
            "mean_probability": (mean_probability_vote(members) == test_labels).double().mean().item(),
            "majority": (majority_vote(members) == test_labels).double().mean().item(),
        })
    return rows
