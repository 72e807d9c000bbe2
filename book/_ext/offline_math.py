"""Equations as MathML, rendered by the browser itself: the site's math then needs no network, like its figures.

When the pure-Python ``latex2mathml`` package is installed, every inline and display equation is converted to
MathML at build time (Chromium, Firefox and Safari render MathML Core natively); otherwise the equations are
left to MathJax, which the browser loads from its CDN. An equation latex2mathml cannot convert is a build
warning (an error under -W) rather than a silently unrendered formula.
"""
from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _mathml(latex, display):
    from latex2mathml.converter import convert
    return convert(latex, display="block" if display else "inline")


def to_mathml(app, doctree, docname):
    if app.builder.format != "html":
        return
    try:
        import latex2mathml  # noqa: F401
    except ImportError:
        return
    for node in list(doctree.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block)))):
        display = isinstance(node, nodes.math_block)
        try:
            markup = _mathml(node.astext(), display)
        except Exception as err:  # latex2mathml raises several types for unsupported input
            logger.warning(f"equation not converted to MathML ({type(err).__name__}: {err}): {node.astext()[:80]}",
                           location=node)
            continue
        if display:
            ids = " ".join(node.get("ids", []))
            markup = f'<div class="math-display"{f" id={ids!r}" if ids else ""}>{markup}</div>'
        node.replace_self(nodes.raw("", markup, format="html"))


def setup(app):
    app.connect("doctree-resolved", to_mathml)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
