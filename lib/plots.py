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


def show(fig, caption=None):
    """Display ``fig`` with an HTML bundle for the book and the plotly JSON bundle for Jupyter."""
    from IPython.display import display
    if caption:
        fig.update_layout(title=dict(text=caption, font=dict(size=14)))
    if "google.colab" in sys.modules:
        return fig.show(renderer="colab")
    html = fig.to_html(include_plotlyjs=False, full_html=False, config={"displaylogo": False})
    display({"text/html": html, PLOTLY_JSON: fig.to_plotly_json()}, raw=True)


def loss_curves(log, keys=("loss", "loss_ce", "loss_mlm", "loss_cos"), x="step", title="Distillation losses"):
    """Lines of each logged loss term against ``x`` from a list of log dicts."""
    fig = go.Figure()
    for key in keys:
        points = [(row[x], row[key]) for row in log if row.get(key) is not None]
        if points:
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines", name=key))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title="loss", height=380)
    return fig


def bars(labels, values, title, yaxis_title, reference=None, reference_name="paper"):
    """A bar chart, optionally with a second series of reference values (e.g. the paper's)."""
    fig = go.Figure(go.Bar(x=list(labels), y=list(values), name="this run"))
    if reference is not None:
        fig.add_trace(go.Bar(x=list(labels), y=list(reference), name=reference_name))
    fig.update_layout(title=title, yaxis_title=yaxis_title, barmode="group", height=380)
    return fig
