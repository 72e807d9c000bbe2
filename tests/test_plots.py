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


def _told_apart(traces):
    """(symbol, dash) of each trace: every multi-series figure tells its series apart by more than colour."""
    return [(t.marker.symbol, t.line.dash) for t in traces]


def test_loss_curves_one_panel_per_term_each_with_its_own_y_axis():
    log = [dict(step=s, loss=20.0 - s / 10, loss_ce=0.6 - s / 1000, loss_mlm=10.0 - s / 20, loss_cos=0.4 - s / 2000)
           for s in range(4, 164, 4)]
    fig = plots.loss_curves(log)
    assert [t.name for t in fig.data] == [plots.loss_label(k) for k in ("loss", "loss_ce", "loss_mlm", "loss_cos")]
    # four panels, four y axes: L_cos (about 0.3) is not drawn on the total's scale (about 20)
    assert len({t.yaxis for t in fig.data}) == 4 and len({t.xaxis for t in fig.data}) == 4
    assert list(fig.data[3].y) == [row["loss_cos"] for row in log]
    assert len(set(_told_apart(fig.data))) == 4


def test_latency_sweep_panels_per_batch_and_a_marker_and_dash_per_model():
    import pandas as pd
    models = ["BERT-base", "DistilBERT", "teacher", "student", "student int8"]
    frame = pd.DataFrame([dict(model=m, batch_size=b, seq_len=n, latency_ms=(i + 1) * b * n / 10)
                          for i, m in enumerate(models) for b in (1, 8) for n in (16, 64, 128, 256)])
    fig = plots.latency_sweep_figure(frame)
    lines = [t for t in fig.data if t.x[0] is not None]
    assert len(lines) == 10 and {t.xaxis for t in lines} == {"x", "x2"}  # batch 1 | batch 8
    styles = {t.name.split(",")[0]: (t.marker.symbol, t.line.dash, t.line.color) for t in lines}
    assert len(set(s[:2] for s in styles.values())) == 5  # five models, five marker/dash pairs
    for t in lines:  # a model looks the same in both panels
        assert (t.marker.symbol, t.line.dash, t.line.color) == styles[t.name.split(",")[0]]
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == models


def test_bars_and_lines_of_every_multi_series_figure_differ_by_more_than_colour():
    bars = plots.grouped_bars({"paper": {"a": 1}, "cpu": {"a": 2}, "t4": {"a": 3}}, "t", "y")
    assert len({t.marker.pattern.shape for t in bars.data}) == 3
    assert len({t.marker.pattern.shape for t in plots.bars(["a"], [1], "t", "y", reference=[2]).data}) == 2
    assert len(set(_told_apart(plots.kd_gradient_figure([1.0, 0.0], [0.0, 1.0], [1, 2]).data))) == 2
    curve = [dict(step=0, tokens=0, mlm_accuracy=0.2, kl_to_teacher=1.0, n_tokens=100)]
    held = plots.heldout_curves({"a": curve, "b": curve, "c": curve})
    assert len(set(_told_apart(held.data))) == 3
