"""lib.plots: the figures' numbers (what each bar or point shows), not their styling."""
import math

import numpy as np
import pytest

from lib import plots


def test_softmax_temperatures_full_vocabulary_shares_and_the_marked_answer():
    logits = [3.0, 2.0, 1.0]
    temperatures = (1, 2)
    # a vocabulary of the three candidates plus 97 tokens at logit 0: the full-vocabulary logsumexp at each T
    lse = [math.log(sum(math.exp(z / t) for z in logits) + 97) for t in temperatures]
    fig = plots.softmax_temperatures(["a", "b", "c"], logits, temperatures, logsumexp=lse, answer_rank=1)
    for trace, t, norm in zip(fig.data, temperatures, lse):
        expected = [math.exp(z / t - norm) for z in logits]
        assert np.allclose(trace.y, expected) and sum(trace.y) < 1  # not renormalised over the candidates
        assert list(trace.x) == ["a", "b \u2713", "c"]
    # one y range for the whole slider, fitted to the tallest full-vocabulary bar (T = 1's first), not to 1
    top = fig.layout.yaxis.range[1]
    assert top == pytest.approx(1.1 * max(fig.data[0].y)) and top < 1
    renormalised = plots.softmax_temperatures(["a", "b", "c"], logits, temperatures)
    assert np.isclose(sum(renormalised.data[0].y), 1.0) and list(renormalised.layout.yaxis.range) == [0, 1]


def test_heldout_curves_plot_percent_accuracy_with_binomial_errors_and_reference_lines():
    curve = [dict(step=0, tokens=0, mlm_accuracy=0.25, kl_to_teacher=2.0, n_tokens=400),
             dict(step=10, tokens=2000, mlm_accuracy=0.5, kl_to_teacher=1.0, n_tokens=400)]
    fig = plots.heldout_curves({"student": curve}, {"teacher": dict(mlm_accuracy=0.6, kl_to_teacher=0.0)})
    accuracy, kl = fig.data
    assert list(accuracy.x) == [0, 2000] and list(accuracy.y) == [25.0, 50.0] and list(kl.y) == [2.0, 1.0]
    # +-2 standard errors of a proportion over 400 targets: 2 * 100 * sqrt(p (1 - p) / 400)
    assert np.allclose(accuracy.error_y.array, [2 * 100 * math.sqrt(0.25 * 0.75 / 400), 2 * 100 * 0.025])
    levels = sorted(shape.y0 for shape in fig.layout.shapes)
    assert levels == [0.0, 60.0]
