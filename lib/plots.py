"""Plotly figures that render everywhere: the built book (offline), Jupyter and Colab.

The book serves one copy of plotly.js (book/_ext/plotly_static.py copies it from the installed plotly
package into the site's _static/), so figures are emitted as HTML *without* plotly.js. A bare
``fig.show()`` would not do: plotly >= 6 emits only its JSON mime type, which the book's renderer drops.
"""
import sys

import plotly.graph_objects as go
import plotly.io as pio

pio.templates.default = "plotly_white"
PLOTLY_JSON = "application/vnd.plotly.v1+json"

# Series are told apart by more than colour (printed in grey, read by a colour-blind reader): each series of a
# figure takes the next colour, marker symbol and dash (lines) or fill pattern (bars) together.
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
          "#7f7f7f")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "triangle-down", "pentagon",
           "hexagram")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
PATTERNS = ("", "/", "x", ".", "\\", "+", "-", "|")


def series_style(i):
    """Colour, marker symbol, dash and bar pattern of the ``i``-th series of a figure."""
    return {"color": COLORS[i % len(COLORS)], "symbol": SYMBOLS[i % len(SYMBOLS)], "dash": DASHES[i % len(DASHES)],
            "pattern": PATTERNS[i % len(PATTERNS)]}


def line_style(i, **line):
    """Scatter keyword arguments (line and marker) of the ``i``-th line of a figure."""
    style = series_style(i)
    return dict(line=dict(color=style["color"], dash=style["dash"], **line),
                marker=dict(color=style["color"], symbol=style["symbol"], size=7))


def bar_style(i):
    """Bar marker (colour and fill pattern) of the ``i``-th bar series of a figure."""
    style = series_style(i)
    return dict(color=style["color"], pattern=dict(shape=style["pattern"], fillmode="overlay", size=6, solidity=0.3))


def show(fig, caption=None):
    """Display ``fig`` (caption under it, as <figure>/<figcaption>) with an HTML bundle for the book and the
    plotly JSON bundle for Jupyter; on Colab through plotly's own renderer."""
    import html as html_lib
    from IPython.display import HTML, display
    caption_html = f"<figcaption>{html_lib.escape(caption)}</figcaption>" if caption else ""
    if "google.colab" in sys.modules:
        fig.show(renderer="colab")
        return display(HTML(f"<p><em>{html_lib.escape(caption)}</em></p>")) if caption else None
    plot = fig.to_html(include_plotlyjs=False, full_html=False, config={"displaylogo": False})
    html = f'<figure class="report-figure">{plot}{caption_html}</figure>'
    display({"text/html": html, PLOTLY_JSON: fig.to_plotly_json()}, raw=True)


# what lib.training logs: 'loss' is the weighted sum that is minimised, each loss_<term> its term before weighting
TOTAL_LABEL = "total: \u03a3 \u03b1\u00b7L (weighted sum)"


def loss_label(key):
    """A logged loss's name in a legend: the total as weighted, a term (lib.losses.TERMS) as unweighted."""
    if key == "loss":
        return TOTAL_LABEL
    from lib import losses  # here, not above: this module serves the book's pages, which need no torch
    name = key.removeprefix("loss_")
    term = losses.TERMS.get(name)
    return f"{(term and term.label) or 'L_' + name} (unweighted; \u00d7 alpha_{name} in the total)"


def loss_curves(log, keys=None, x="step", title="Distillation losses"):
    """One panel per logged loss against ``x`` from a list of log dicts (default keys: the total and every
    loss_<term> the log holds, in its order), each named as weighted (the total) or unweighted (a term). The terms
    differ in scale by orders of magnitude (a cosine loss below 1, a masked-LM loss near 10, the weighted total
    above both), so each has its own panel and y axis, with x shared."""
    from plotly.subplots import make_subplots
    if keys is None:
        keys = [k for k in dict.fromkeys(k for row in log for k in row) if k == "loss" or k.startswith("loss_")]
    series = [(key, [(row[x], row[key]) for row in log if row.get(key) is not None]) for key in keys]
    series = [(key, points) for key, points in series if points]
    cols = 2 if len(series) > 1 else 1
    rows = max(1, -(-len(series) // cols))
    titles = [loss_label(key).replace(" (", "<br>(", 1) for key, _ in series]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True, horizontal_spacing=0.12,
                        vertical_spacing=0.2 if rows > 1 else 0.1)
    for i, (key, points) in enumerate(series):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines",
                                 name=loss_label(key), showlegend=False, **line_style(i)), row=row, col=col)
        fig.update_yaxes(title_text="loss", row=row, col=col)
    fig.update_xaxes(title_text=x, row=rows)
    fig.update_annotations(font_size=12)
    fig.update_layout(title=title, height=120 + 230 * rows, margin=dict(t=96))  # room for the title and the legend
    return fig


def bars(labels, values, title, yaxis_title, reference=None, reference_name="paper"):
    """A bar chart, optionally with a second series of reference values (e.g. the paper's)."""
    fig = go.Figure(go.Bar(x=list(labels), y=list(values), name="this run", marker=bar_style(0)))
    if reference is not None:
        fig.add_trace(go.Bar(x=list(labels), y=list(reference), name=reference_name, marker=bar_style(1)))
    fig.update_layout(title=title, yaxis_title=yaxis_title, barmode="group", height=380)
    return fig


# --- figures of the book's report pages (they only read results; see lib/report.py) ---

def softmax(logits, temperature=1.0):
    import numpy as np
    z = np.asarray(logits, dtype=float) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def softmax_temperatures(tokens, logits, temperatures=(0.5, 1, 2, 4, 8), title="Softmax at temperature T",
                         logsumexp=None, answer_rank=None):
    """Bars of softmax(logits / T) over ``tokens`` with a slider over ``temperatures`` (T = 1 shown first). With
    ``logsumexp`` (the full-vocabulary logsumexp(logits / T), one per temperature) each bar is that token's share of
    the whole distribution, not renormalised over ``tokens``; the bar at ``answer_rank`` is marked as correct."""
    import numpy as np
    temperatures = list(temperatures)
    labels = [f"{t} ✓" if i == answer_rank else t for i, t in enumerate(tokens)]
    colors = ["#d62728" if i == answer_rank else "#1f77b4" for i in range(len(tokens))]
    fig = go.Figure()
    for i, t in enumerate(temperatures):
        probabilities = (softmax(logits, t) if logsumexp is None
                         else np.exp(np.asarray(logits, dtype=float) / t - logsumexp[i]))
        fig.add_trace(go.Bar(x=labels, y=probabilities, name=f"T = {t:g}", visible=(t == 1),
                             marker_color=colors))
    steps = [dict(method="update", label=f"{t:g}",
                  args=[{"visible": [j == i for j in range(len(temperatures))]}])
             for i, t in enumerate(temperatures)]
    start = temperatures.index(1) if 1 in temperatures else 0
    fig.data[start].visible = True
    tallest = max(max(bar.y) for bar in fig.data)
    fig.update_layout(title=title, xaxis_title="token (✓: the correct token)" if answer_rank is not None
                      else "token", yaxis_title="probability" if logsumexp is None
                      else "probability (share of the full vocabulary)",
                      # one fixed range for every temperature, so the slider shows the bars change; full-vocabulary
                      # shares can all be small, so the range follows the tallest bar rather than 1
                      yaxis_range=[0, 1 if logsumexp is None else min(1.0, 1.1 * tallest)],
                      height=420, sliders=[dict(active=start, currentvalue={"prefix": "temperature T = "},
                                                steps=steps, pad={"t": 60})])
    return fig


def kd_gradient_norms(teacher_logits, student_logits, temperatures):
    """For each T: the norm of d KL(p_t^T || p_s^T) / d z_s, which is (p_s^T - p_t^T) / T, with and without
    the T^2 factor (Hinton et al. 2015, section 2.1)."""
    import numpy as np
    plain, scaled = [], []
    for t in temperatures:
        grad = (softmax(student_logits, t) - softmax(teacher_logits, t)) / t
        plain.append(float(np.linalg.norm(grad)))
        scaled.append(float(np.linalg.norm(grad * t * t)))
    return plain, scaled


def kd_gradient_figure(teacher_logits, student_logits, temperatures, title="Gradient of the soft-target loss"):
    plain, scaled = kd_gradient_norms(teacher_logits, student_logits, temperatures)
    fig = go.Figure([
        go.Scatter(x=list(temperatures), y=plain, mode="lines+markers", name="KL only", **line_style(0)),
        go.Scatter(x=list(temperatures), y=scaled, mode="lines+markers", name="T\u00b2 \u00b7 KL", **line_style(1)),
    ])
    fig.update_layout(title=title, xaxis_title="temperature T", yaxis_title="gradient norm w.r.t. student logits",
                      xaxis_type="log", yaxis_type="log", height=380)
    return fig


def grouped_bars(series, title, yaxis_title, reference_line=None, horizontal=False, errors=None):
    """One bar group per category; ``series``: name -> {category: value} (None values are left out);
    ``errors``: name -> {category: (low, high)}, drawn as error bars from low to high (e.g. min-max over seeds)."""
    fig = go.Figure()
    errors = errors or {}
    for i, (name, values) in enumerate(series.items()):
        points = [(k, v) for k, v in values.items() if v is not None]
        cats, vals = [p[0] for p in points], [p[1] for p in points]
        spans = errors.get(name) or {}
        bar = {}
        if spans:
            low = [v - spans[k][0] if spans.get(k) and None not in spans[k] else 0 for k, v in points]
            high = [spans[k][1] - v if spans.get(k) and None not in spans[k] else 0 for k, v in points]
            bar["error_x" if horizontal else "error_y"] = dict(type="data", symmetric=False, array=high,
                                                               arrayminus=low, visible=True)
        fig.add_trace(go.Bar(x=vals if horizontal else cats, y=cats if horizontal else vals, name=name,
                             orientation="h" if horizontal else "v", marker=bar_style(i), **bar))
    if reference_line is not None:
        line = dict(type="line", line=dict(dash="dot", color="grey"))
        if horizontal:
            line.update(x0=reference_line, x1=reference_line, y0=0, y1=1, yref="paper")
        else:
            line.update(y0=reference_line, y1=reference_line, x0=0, x1=1, xref="paper")
        fig.add_shape(**line)
    axis = dict(xaxis_title=yaxis_title) if horizontal else dict(yaxis_title=yaxis_title)
    fig.update_layout(title=title, barmode="group", height=400, showlegend=True, legend_title_text="series",
                      **axis)
    return fig


def latency_sweep_figure(frame, title="Latency against sequence length"):
    """Median latency (ms) against sequence length, one panel per batch size and one line per model; a model keeps
    its colour, marker and dash in every panel (one legend entry)."""
    from plotly.subplots import make_subplots
    models = list(dict.fromkeys(frame["model"]))
    batches = list(dict.fromkeys(frame["batch_size"]))
    fig = make_subplots(rows=1, cols=len(batches), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"batch size {b}" for b in batches])
    for (model, batch), group in frame.groupby(["model", "batch_size"], sort=False):
        group = group.sort_values("seq_len")
        col = batches.index(batch) + 1
        fig.add_trace(go.Scatter(x=group["seq_len"], y=group["latency_ms"], mode="lines+markers",
                                 name=f"{model}, batch {batch}", legendgroup=model, legendgrouptitle_text=None,
                                 showlegend=False, **line_style(models.index(model))), row=1, col=col)
    for i, model in enumerate(models):  # one legend entry per model, styled like its lines
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines+markers", name=model, legendgroup=model,
                                 **line_style(i)), row=1, col=1)
    lengths = sorted(set(frame["seq_len"]))
    fig.update_xaxes(title_text="sequence length (tokens)", type="log", tickvals=lengths,
                     ticktext=[str(n) for n in lengths])
    low, high = frame["latency_ms"].min(), frame["latency_ms"].max()
    fig.update_yaxes(type="log", **({"dtick": 1} if low > 0 and high / low > 20 else {}))  # label the decades only
    fig.update_yaxes(title_text="latency (ms, median)", col=1)
    fig.update_layout(title=title, height=440, legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig


def size_quality_figure(frame, title="Size and speed against GLUE score"):
    """Relative latency (x) against GLUE score (y), marker size ~ parameters; paper points and this run's
    (a ``lib.latency.size_quality_table``). Models without a GLUE score of this scale are left out."""
    fig = go.Figure()
    for i, (source, group) in enumerate(frame.dropna(subset=["glue_score"]).groupby("source", sort=False)):
        style = series_style(i)
        fig.add_trace(go.Scatter(
            x=group["relative_latency"], y=group["glue_score"], mode="markers+text", name=source,
            text=group["model"], textposition="top center",
            marker=dict(size=[max(8.0, min(40.0, p ** 0.5 * 3)) for p in group["params_m"]], opacity=0.7,
                        color=style["color"], symbol=style["symbol"]),
            hovertext=[f"{m}: {p:.1f}M parameters" for m, p in zip(group["model"], group["params_m"])]))
    fig.update_layout(title=title, xaxis_title="latency relative to the reference model (CPU, batch 1)",
                      yaxis_title="GLUE dev macro score", height=420)
    return fig


HELDOUT_MEASURES = {"mlm_accuracy": "masked-token accuracy (%)", "kl_to_teacher": "KL(teacher || student), nats per target"}


def heldout_curves(curves, reference=None, x="tokens", title="Held-out measures against tokens seen"):
    """Learning curves of the held-out measures, one line per run: ``curves`` maps a run name to its heldout_curve
    (lib.distill: points with step, tokens, mlm_accuracy in [0, 1], kl_to_teacher, n_tokens), ``reference`` maps a
    model (the teacher, the undistilled student) to one such point, drawn as a dashed level line. Masked-token
    accuracy carries +-2 binomial standard errors over the n_tokens masked targets (the sampling error of the
    held-out set; every run is measured on the same masks)."""
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(HELDOUT_MEASURES.values()), horizontal_spacing=0.1)
    for i, (name, points) in enumerate(curves.items()):
        xs = [p[x] for p in points]
        for col, measure in enumerate(HELDOUT_MEASURES, start=1):
            scale = 100.0 if measure == "mlm_accuracy" else 1.0
            ys = [p[measure] * scale for p in points]
            errors = ([2 * 100.0 * (p[measure] * (1 - p[measure]) / p["n_tokens"]) ** 0.5 for p in points]
                      if measure == "mlm_accuracy" else None)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=col == 1, **line_style(i),
                                     error_y=dict(type="data", array=errors, visible=True) if errors else None),
                          row=1, col=col)
    for name, point in (reference or {}).items():
        for col, measure in enumerate(HELDOUT_MEASURES, start=1):
            scale = 100.0 if measure == "mlm_accuracy" else 1.0
            fig.add_hline(y=point[measure] * scale, line_dash="dash", line_color="grey", row=1, col=col,
                          annotation_text=name, annotation_position="top left")
    fig.update_xaxes(title_text="tokens seen" if x == "tokens" else x)
    fig.update_layout(title=title, height=420)
    return fig


def adaptation_curves(runs, title="MLM-head adaptation: selection accuracy against steps"):
    """The teacher's adaptation curves (lib.teacher.adapt's record: runs of {top_layers, curve: [{step,
    mlm_accuracy, ...}]}), one line per number of top layers trained, masked-token accuracy in percent."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        points = run["curve"]
        fig.add_trace(go.Scatter(x=[p["step"] for p in points], y=[100.0 * p["mlm_accuracy"] for p in points],
                                 mode="lines+markers", name=f"MLM head + top {run['top_layers']} layers",
                                 **line_style(i)))
    fig.update_layout(title=title, xaxis_title="adaptation step", yaxis_title="masked-token accuracy (%)",
                      height=400)
    return fig
