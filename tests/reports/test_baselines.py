"""Random-guess baselines on the Krones CheXpert frontal validation counts."""

from __future__ import annotations

import numpy as np
import pytest

from reports import baselines as bl

POSITIVES = (75, 66, 32, 42, 64)  # Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion of 202


def _labels() -> np.ndarray:
    y = np.zeros((202, 5))
    for c, k in enumerate(POSITIVES):
        y[np.random.default_rng(c).permutation(202)[:k], c] = 1.0
    return y


def test_always_negative_reproduces_paper_values() -> None:
    got = bl.always_negative_accuracy(_labels())
    assert np.round(got, 4).tolist() == [0.6287, 0.6733, 0.8416, 0.7921, 0.6832]
    assert bl.majority_accuracy(_labels()) == pytest.approx(got)  # every prevalence < 0.5


def test_known_prevalence_guesser_is_a_different_number() -> None:
    p = np.array(POSITIVES) / 202
    got = bl.known_prevalence_random_accuracy(_labels())
    assert got == pytest.approx(p**2 + (1 - p) ** 2)
    assert np.round(got, 4).tolist() == [0.5331, 0.5600, 0.7334, 0.6706, 0.5671]


def test_subset_and_unknowns() -> None:
    y = np.array([[0, 0], [1, 0], [0, np.nan], [0, 1]])
    assert bl.always_negative_subset_accuracy(y) == 0.5
    assert bl.prevalence(y).tolist() == [0.25, 1 / 3]
