"""A note at the top of every stage page (book/stages/<profile>/NN_stage.ipynb, a papermill output): which
notebook it is, the scale it ran at, the parameters it ran with (the profile's file plus the overrides papermill
injected), its results file, and a Colab link to the stage's clean notebook (lib.colab: generated from
notebooks/NN_stage.py and published on the colab branch), never to the executed record.

The note is built from the notebook file itself, so it stays true whatever the stage notebooks print; the
stage notebooks are never executed by the book. The theme's Colab launch button is pointed at the same clean
notebook on stage pages and removed from other pages (Colab cannot open a MyST page).
"""
import ast
import json
import re
import sys
from pathlib import Path

from docutils import nodes

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE_DOC = re.compile(r"^stages/(?P<profile>[^/]+)/(?P<stem>\d\d_\w+)$")


def injected_parameters(notebook_path):
    """{name: value} assigned in the cell papermill tagged 'injected-parameters' ({} when there is none)."""
    notebook = json.loads(Path(notebook_path).read_text())
    for cell in notebook.get("cells", []):
        if "injected-parameters" in (cell.get("metadata", {}).get("tags") or []):
            source = "".join(cell.get("source", []))
            values = {}
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        values[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        values[node.targets[0].id] = ast.unparse(node.value)
            return values
    return {}


def _lib(name):
    """A module of the project's lib/ (the book is built from the repository root)."""
    import importlib
    sys.path.insert(0, str(REPO_ROOT))
    try:
        return importlib.import_module(f"lib.{name}")
    finally:
        sys.path.remove(str(REPO_ROOT))


def scale_label(profile):
    try:
        return _lib("results").SCALE_LABELS.get(profile, f"the {profile} profile")
    except ImportError:
        return f"the {profile} profile"


def result_of(stem):
    """The main results file's name of the stage whose notebook is ``stem`` (lib.config.STAGES), or None."""
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from lib.config import STAGES
    finally:
        sys.path.remove(str(REPO_ROOT))
    return next((stage.results[0] for stage in STAGES.values() if stage.notebook == stem), None)


def colab_url(theme, docname):
    """The clean notebook of the stage shown at ``docname`` (stages/<profile>/NN_stage), on the theme's repository."""
    return _lib("colab").colab_url(STAGE_DOC.match(docname)["stem"], theme.get("repository_url"))


def _link(text, url):
    return nodes.reference("", "", nodes.literal(text, text), refuri=url)


def _repo_file(theme, path):
    return f"{theme.get('repository_url', '').rstrip('/')}/blob/{theme.get('repository_branch', 'main')}/{path}"


def stage_note(app, docname, notebook_path):
    match = STAGE_DOC.match(docname)
    profile, stem = match["profile"], match["stem"]
    theme = app.config.html_theme_options or {}
    injected = injected_parameters(notebook_path)
    commit = injected.get("_project_commit")  # injected by lib.pipeline when it records the commit
    overrides = {k: v for k, v in injected.items() if k != "profile" and not k.startswith("_")}
    note = nodes.admonition(classes=["stage-note"])
    note += nodes.title("", "How this page was produced")
    first = nodes.paragraph()
    first += nodes.Text("The executed notebook ")
    first += _link(f"notebooks/{stem}.py", _repo_file(theme, f"notebooks/{stem}.py"))
    first += nodes.Text(f", run by papermill at {scale_label(profile)}")
    if commit:
        first += nodes.Text(" from commit ")
        first += _link(str(commit)[:10], f"{theme.get('repository_url', '').rstrip('/')}/tree/{commit}")
    first += nodes.Text(". The book shows its saved outputs and never re-runs it.")
    params = nodes.paragraph()
    params += nodes.Text("Parameters: ")
    params += _link(f"params/{profile}/{stem}.yaml", _repo_file(theme, f"params/{profile}/{stem}.yaml"))
    if overrides:
        text = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        params += nodes.Text(f", overridden by papermill with {text}")
    params += nodes.Text("; every value it resolved to is printed by the notebook's first code cells, and the "
                         "defaults and their meaning are in ")
    params += _link("lib/config.py", _repo_file(theme, "lib/config.py"))
    params += nodes.Text(".")
    result = result_of(stem)
    where = nodes.paragraph()
    if result and (REPO_ROOT / "results" / profile / f"{result}.json").is_file():
        where += nodes.Text("Results file: ")
        where += _link(f"results/{profile}/{result}.json", _repo_file(theme, f"results/{profile}/{result}.json"))
        where += nodes.Text(". ")
    where += nodes.Text("Run it yourself: ")
    where += nodes.reference("", "Open in Colab", refuri=colab_url(theme, docname))
    where += nodes.Text(" (choose a GPU runtime for the t4 profile and set profile in the parameters cell).")
    note += [first, params, where]
    return note


def on_doctree_read(app, doctree):
    docname = app.env.docname
    if not STAGE_DOC.match(docname):
        return
    note = stage_note(app, docname, app.env.doc2path(docname))
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is not None and section.children and isinstance(section[0], nodes.title):
        section.insert(1, note)
    else:
        doctree.insert(0, note)


def fix_colab_buttons(app, pagename, templatename, context, doctree):
    """After the theme added its launch buttons (priority 501): Colab opens the clean notebook of a stage page;
    other pages lose the Colab button."""
    theme = app.config.html_theme_options or {}
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        buttons = group["buttons"]
        for button in [b for b in buttons if b.get("text") == "Colab"]:
            if STAGE_DOC.match(pagename):
                button["url"] = colab_url(theme, pagename)
            else:
                buttons.remove(button)
    context["header_buttons"] = [g for g in context.get("header_buttons", [])
                                 if g.get("label") != "launch-buttons" or g["buttons"]]


def setup(app):
    app.connect("doctree-read", on_doctree_read)
    app.connect("html-page-context", fix_colab_buttons, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
