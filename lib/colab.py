"""Colab: the clean stage notebooks the "Open in Colab" links open, and the defaults that survive a disconnect.

The repository address lives in one tracked file, ``_config.yml`` (``repository: url:``, which Jupyter Book also
reads); the README's links aside, everything else derives from it. A Colab notebook must know what to clone
before ``lib`` exists, so the clean notebooks are generated, never tracked: ``python -m lib.colab OUT`` writes
one per stage from ``notebooks/NN_stage.py`` with the clone code, address and commit filled in, and
``.github/workflows/pages.yml`` publishes them on the ``colab`` branch, where :func:`colab_url` points.

On Colab, ``run_dir`` and ``results_dir`` default to a Google Drive folder (mounted with a message saying so),
so checkpoints and results outlive the VM, and stage 2 resumes from its last checkpoint unless ``resume = False``.

The setup code lives here once: a tracked notebook's setup cell only puts the project's root on ``sys.path``, and
its first call, ``lib.notebook_setup``, loads the parameters (:func:`load_notebook_params`); the Colab copy's setup
cell also gets :func:`clone_project`, copied in by :func:`clean_notebook`. Colab's folder is ``/content``, or
``$DISTILBERT_COLAB_CONTENT`` where a test lays Colab out in a temporary folder (tests/colab_layout.py).
"""
import ast
import inspect
import os
import re
import sys
from pathlib import Path

import yaml

from lib import REPO_ROOT

COLAB_BRANCH = "colab"    # branch the pages workflow publishes the clean notebooks to
CONTENT_VARIABLE, CONTENT_DEFAULT = "DISTILBERT_COLAB_CONTENT", "/content"  # Colab's working folder
CONTENT = os.environ.get(CONTENT_VARIABLE, CONTENT_DEFAULT)
PROJECT = "distilbert-reproduced"  # the clone's folder in CONTENT, and the Drive folder's name
DRIVE = f"{CONTENT}/drive"
DRIVE_HOME = f"{DRIVE}/MyDrive/{PROJECT}"  # {runs,results}/<profile> go under this folder
COMMIT_LINE = "_project_commit = None"  # the parameters cell's line the clean notebook fills in
COMMIT_HELP = "lib.pipeline: this run's commit (the book links it); the Colab copy: the commit it clones"
# the first words of a tracked parameters cell (notebooks/NN_stage.py), whose generated cell assigns _project_commit;
# not papermill's "# Parameters", which marks its injected cell
PARAMETERS_MARKER = "# Stage parameters"
SETUP_LINE = "sys.path[:0] = "  # the setup cell's line (puts the project on sys.path) the clone code goes before


def on_colab():
    return "google.colab" in sys.modules


def repository_url(config_file=REPO_ROOT / "_config.yml"):
    """The repository address: ``repository.url`` of the book's ``_config.yml`` (the one place it is written)."""
    url = (yaml.safe_load(Path(config_file).read_text()).get("repository") or {}).get("url")
    if not url:
        raise ValueError(f"{config_file} sets no repository: url:")
    return url.rstrip("/")


def colab_url(stem, repository=None):
    """The "Open in Colab" address of a stage's clean notebook (the ``colab`` branch, see the module doc)."""
    slug = (repository or repository_url()).removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{slug}/blob/{COLAB_BRANCH}/{stem}.ipynb"


def clean_notebook(stem, repository=None, commit=None):
    """The Colab notebook of stage ``stem`` (e.g. ``02_distill``): the jupytext source as an nbformat notebook
    (lib.pipeline.read_notebook: its parameters cell lists every parameter with its help), no outputs, its
    parameters cell right after the title, the setup cell told what to clone (:func:`colab_setup`)."""
    from lib import config, pipeline
    notebook = pipeline.read_notebook(config.stage_by_notebook(stem))
    edits = {COMMIT_LINE: lambda line: [f"_project_commit = {commit!r}"],
             SETUP_LINE: lambda line: colab_setup(repository or repository_url()) + [line]}
    for start, edit in edits.items():
        cells = [cell for cell in notebook.cells if any(_starts(text, start) for text in cell.source.splitlines())]
        if len(cells) != 1:
            raise ValueError(f"notebooks/{stem}.py: expected a line {start!r} in exactly one cell, found {len(cells)}")
        lines = cells[0].source.splitlines()
        at = next(i for i, text in enumerate(lines) if _starts(text, start))
        cells[0].source = "\n".join(lines[:at] + edit(lines[at]) + lines[at + 1:])
    notebook.metadata.pop("jupytext", None)
    for i, cell in enumerate(notebook.cells):  # the same notebook for the same source, build after build
        cell.id = f"cell-{i}"
    return notebook


def colab_setup(repository):
    """The lines the Colab copy's setup cell runs before it looks for the project: :func:`clone_project`'s own
    source (``lib`` cannot be imported before the clone) and, on Colab only, its call."""
    return ["# On Colab (this copy was written by python -m lib.colab): clone the project at the commit this notebook",
            "# was made from, install its runtime requirements and work from there.",
            *inspect.getsource(clone_project).splitlines(), "",
            'if "google.colab" in sys.modules:',
            f"    _home = os.path.join(os.environ.get({CONTENT_VARIABLE!r}, {CONTENT_DEFAULT!r}), {PROJECT!r})",
            f"    os.chdir(clone_project({repository!r}, _project_commit, _home))"]


def clone_project(repository, commit, home):
    """Clone ``repository`` into ``home`` at ``commit`` (the branch's head if that commit is not pushed) and install
    its runtime requirements, unless ``home`` exists (Run all again, or another stage in the same runtime)."""
    import os  # self-contained: colab_setup copies this function into the notebook
    import subprocess
    import sys
    if not os.path.isdir(home):
        subprocess.run(["git", "clone", "-q", repository, home], check=True)
        if commit:
            subprocess.run(["git", "-C", home, "checkout", "-q", commit])
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", f"{home}/requirements.txt"], check=True)
    return home


def _starts(text, start):
    """``text`` starts with ``start`` (a line of the source; for COMMIT_LINE, whatever comment follows it)."""
    return text.split("#")[0].strip().startswith(start.strip())


def write_clean_notebooks(out_dir, repository=None, commit=None):
    """Write every stage's clean notebook into ``out_dir``; returns their paths."""
    import nbformat

    from lib.config import STAGES
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem in (spec.notebook for spec in STAGES.values()):
        paths.append(out_dir / f"{stem}.ipynb")
        nbformat.write(clean_notebook(stem, repository, commit), paths[-1])
    return paths


# ------------------------------------------------------------------------------------------- defaults on Colab

def default_dir(kind, profile):
    """Where ``run_dir`` (kind "runs") or ``results_dir`` (kind "results") goes when the parameters leave it
    empty: ``<kind>/<profile>`` under the repository, or on Colab a Drive folder that survives a disconnect."""
    if not on_colab():
        return f"{kind}/{profile}"
    mount_drive(f"{kind.removesuffix('s')}_dir defaults to Google Drive on Colab, so the run survives a "
                "disconnect; set run_dir/results_dir in the parameters cell for another folder")
    return f"{DRIVE_HOME}/{kind}/{profile}"


def mount_drive(why):
    """Mount Google Drive at /content/drive once, saying why (Colab asks the user to authorise it)."""
    if Path(DRIVE, "MyDrive").is_dir():
        return
    print(f"Mounting Google Drive at {DRIVE}: {why}.", flush=True)
    from google.colab import drive
    drive.mount(DRIVE)


def load_notebook_params(stage, namespace):
    """The parameters of a stage notebook whose globals are ``namespace``: :func:`notebook_parameters` over the
    profile's file (``config.load_params``). An unknown name that may be left from an earlier run in the same
    kernel (the parameters cell was not found in the kernel's history) is refused with the way out: a restart."""
    import dataclasses

    from lib import config
    history = namespace.get("In") or []
    exact = _parameters_cell_names(history) is not None
    given = notebook_parameters(stage, namespace)
    try:
        return config.load_params(stage, given)
    except config.ParameterError as err:
        known = {f.name for f in dataclasses.fields(config.STAGES[stage].params)}
        injected = set(config._injected_names(namespace))
        if exact or err.name in known | injected or err.name not in given:
            raise
        raise config.ParameterError(err.name, f"not a parameter of stage {stage!r}. If the parameters cell no longer "
                                    "sets it, it is left from an earlier run in this kernel: Runtime > Restart "
                                    "session (Jupyter: Kernel > Restart), then Run all") from None


def notebook_parameters(stage, namespace):
    """The parameters a stage notebook was given, from its globals ``namespace``: the names its parameters cell
    assigned the last time it ran, and papermill's injected cell after it, read from the kernel's input history
    (``In``). A name the cell no longer assigns (a typo since corrected, a deleted line) stays in the globals after
    Colab's "Run all" again, but is not taken. Without that cell in the history (no ``In``, or no cell assigning
    ``_project_commit``, the parameters cell's last line), every global but the notebook's own names is taken.
    On Colab, stage 2 resumes unless told otherwise, and a /content/drive path mounts Drive."""
    import dataclasses

    from lib.config import STAGES
    names = _parameters_cell_names(namespace.get("In"))
    if names is None:  # a field is a parameter, even where the notebook assigns it too
        own = _assigned_outside_parameters(REPO_ROOT / "notebooks" / f"{STAGES[stage].notebook}.py")
        names = set(namespace) - (own - {f.name for f in dataclasses.fields(STAGES[stage].params)})
    values = {name: namespace[name] for name in namespace if name in names or name == "In"}  # In: papermill's names
    if on_colab() and values.get("resume") is None and hasattr(STAGES[stage].params, "resume"):
        values["resume"] = True  # Run all after a disconnect continues from the last checkpoint on Drive
    if on_colab() and any(str(value).startswith(DRIVE) for value in _strings(values, skip="In")):
        mount_drive("a parameter names a path there")
    return values


def _parameters_cell_names(history):
    """The names assigned by the latest run of the parameters cell (the latest input in ``history`` that assigns
    ``_project_commit``, as the generated cell does, or starts with PARAMETERS_MARKER, as the tracked one does, and
    is not papermill's, which starts with "# Parameters") and by papermill's after it, or None when no input does."""
    names = set()
    for source in reversed(history or []):
        if not isinstance(source, str):
            continue
        assigned = _top_level_names(source)
        if _is_papermills(source):
            names |= assigned
        elif "_project_commit" in assigned or source.lstrip().startswith(PARAMETERS_MARKER):
            return names | assigned
    return None


def _is_papermills(source):
    """The input is papermill's injected-parameters cell."""
    return source.lstrip().startswith("# Parameters")


def _top_level_names(source):
    """Names a cell's top-level assignments bind (none for a cell that does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    targets = [t for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
               for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _assigned_outside_parameters(source_path):
    text = Path(source_path).read_text()
    parts = re.split(r"^# %%.*$", text, flags=re.M)
    headers = re.findall(r"^# %%.*$", text, flags=re.M)
    parameters, own = set(), set()
    for header, body in zip(headers, parts[1:]):
        if "[markdown]" in header:
            continue
        names = set()
        for node in ast.walk(ast.parse(body)):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
        (parameters if '"parameters"' in header else own).update(names)
    return own - parameters


def _strings(value, skip=None):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != skip:  # the kernel's input history is code, not a parameter
                yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def check_runtime(params):
    """On Colab: say which accelerator the runtime has; a GPU profile on a CPU-only runtime stops here."""
    import torch
    if any(str(path).startswith(DRIVE) for path in (params.run_dir, params.results_dir)):
        mount_drive("run_dir/results_dir are there")  # a profile's file may name a Drive folder too
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"Colab runtime: {gpu or 'CPU only'}; run_dir {params.run_dir}, results_dir {params.results_dir}")
    if params.profile in ("t4", "paper") and gpu is None:
        raise RuntimeError(f"profile {params.profile!r} needs a GPU: Runtime > Change runtime type > T4 GPU, then "
                           "Run all again (or set profile = \"smoke\" in the parameters cell)")
    if params.profile == "t4" and "T4" not in gpu:
        print(f"note: the t4 profile is sized for a 16 GB T4; this runtime has {gpu}")


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Write the clean Colab notebook of every stage.")
    parser.add_argument("out_dir")
    parser.add_argument("--commit", help="the commit a Colab run clones (default: the branch's head)")
    args = parser.parse_args(argv)
    for path in write_clean_notebooks(args.out_dir, commit=args.commit):
        print(path)


if __name__ == "__main__":
    main()
