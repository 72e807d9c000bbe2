"""Small fixes to the generated pages.

sphinx-thebe and sphinx-togglebutton register their inline configuration scripts on every read phase, and
under Jupyter Book 1 / Sphinx 7 each page ends up with them twice (once with filename None, once with ''): the
second `const THEBE_JS_URL` is a script error in every browser. Scripts are de-duplicated per page by source
and attributes, keeping the first.

Executed stage notebooks print pandas DataFrames whole: a frame of 5 models x 30 fields is 2,200 px wide, three
times the content column (772 px at a 1,400 px window). Such a frame (more than WIDE_COLUMNS columns and more
columns than rows, one header row, one index column) is shown transposed, fields down and rows across, with a note
saying so; the cells are the notebook's own, unchanged. The .ipynb files keep what the notebook printed.
"""
import html
import re
from html.parser import HTMLParser

from docutils import nodes

WIDE_COLUMNS = 8
TRANSPOSED_NOTE = "(shown transposed to fit the page: one column per row of the printed frame)"


def _key(script):
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {}) or {}
    return str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        seen, unique = set(), []
        for script in scripts:
            if _key(script) not in seen:
                seen.add(_key(script))
                unique.append(script)
        context["script_files"] = unique


class _Grid(HTMLParser):
    """The cells of a pandas to_html table: header rows and body rows, each a list of (tag, text); spans flagged."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.head, self.body, self.section, self.cell, self.spans = [], [], None, None, False

    def handle_starttag(self, tag, attrs):
        if tag in ("thead", "tbody"):
            self.section = self.head if tag == "thead" else self.body
        elif tag == "tr" and self.section is not None:
            self.section.append([])
        elif tag in ("th", "td") and self.section is not None:
            self.spans |= any(name in ("rowspan", "colspan") for name, _ in attrs)
            self.cell = [tag, ""]

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self.cell is not None:
            self.section[-1].append((self.cell[0], self.cell[1].strip()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data


def transpose_frame_html(table_html):
    """A wide pandas to_html table transposed (same cells), or None when it is not one (see the module's doc)."""
    grid = _Grid()
    grid.feed(table_html)
    if grid.spans or len(grid.head) != 1 or not grid.body:
        return None
    header, rows = grid.head[0], grid.body
    width = len(header)
    if width - 1 <= WIDE_COLUMNS or width - 1 <= len(rows) or any(len(r) != width or r[0][0] != "th" for r in rows):
        return None
    cell = lambda tag, text: f"<{tag}>{html.escape(text)}</{tag}>"  # noqa: E731
    head = "<tr>" + cell("th", header[0][1]) + "".join(cell("th", r[0][1]) for r in rows) + "</tr>"
    body = "".join("<tr>" + cell("th", header[i][1]) + "".join(cell(r[i][0], r[i][1]) for r in rows) + "</tr>"
                   for i in range(1, width))
    return (f'<table border="1" class="dataframe transposed"><thead>{head}</thead><tbody>{body}</tbody></table>'
            f'<p class="transposed-note">{html.escape(TRANSPOSED_NOTE)}</p>')


def transpose_wide_frames(app, doctree, docname):
    for node in doctree.findall(nodes.raw):
        if node.get("format") != "html" or 'class="dataframe"' not in node.astext():
            continue
        text = node.astext()
        changed = re.sub(r'<table border="1" class="dataframe">.*?</table>',
                         lambda m: transpose_frame_html(m.group(0)) or m.group(0), text, flags=re.S)
        if changed != text:
            node.replace_self(nodes.raw("", changed, format="html"))


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)  # after every handler that adds scripts
    app.connect("doctree-resolved", transpose_wide_frames)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
