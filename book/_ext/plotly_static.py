"""Serve one copy of plotly.js from the book's _static/, taken from the installed plotly package.

Figures are emitted as HTML without plotly.js (lib/plots.py), so the site needs the library once, offline,
and in the exact version that produced the figures. Nothing is vendored into the repository.
"""
import shutil
from pathlib import Path


def _copy(app, exception):
    if exception is None and app.builder.format == "html":
        import plotly
        source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        target = Path(app.outdir) / "_static" / "plotly.min.js"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def setup(app):
    app.add_js_file("plotly.min.js")
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
