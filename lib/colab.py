"""Colab: the clean stage notebooks the "Open in Colab" links open, and the defaults that survive a disconnect.

The repository address lives in one tracked file, ``_config.yml`` (``repository: url:``, which Jupyter Book also
reads); the README's links aside, everything else derives from it. A Colab notebook must know what to clone
before ``lib`` exists, so the clean notebooks are generated, never tracked: ``python -m lib.colab OUT`` writes
one per stage from ``notebooks/NN_stage.py`` with the address and commit filled into the setup cell, and
``.github/workflows/pages.yml`` publishes them on the ``colab`` branch, where :func:`colab_url` points.

On Colab, ``run_dir`` and ``results_dir`` default to a Google Drive folder (mounted with a message saying so),
so checkpoints and results outlive the VM.
"""
import ast
import re
import sys
from pathlib import Path

import yaml

from lib import REPO_ROOT

COLAB_BRANCH = "colab"    # branch the pages workflow publishes the clean notebooks to
DRIVE = "/content/drive"
DRIVE_HOME = f"{DRIVE}/MyDrive/distilbert-reproduced"  # {runs,results}/<profile> go under this folder
REPOSITORY_LINE = "_repository = None"   # the setup cell's line the clean notebook fills in
COMMIT_LINE = "_project_commit = None"


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
    """The Colab notebook of stage ``stem`` (e.g. ``02_distill``): the jupytext source as an nbformat notebook,
    no outputs, its parameters cell right after the title, the setup cell told what to clone."""
    import jupytext
    notebook = jupytext.read(REPO_ROOT / "notebooks" / f"{stem}.py")
    replacements = {REPOSITORY_LINE: f"_repository = {(repository or repository_url())!r}",
                    COMMIT_LINE: f"_project_commit = {commit!r}"}
    for line, new in replacements.items():
        cells = [cell for cell in notebook.cells if any(_is_line(text, line) for text in cell.source.splitlines())]
        if len(cells) != 1:
            raise ValueError(f"notebooks/{stem}.py: expected the line {line!r} in exactly one cell, found {len(cells)}")
        cells[0].source = "\n".join(new if _is_line(text, line) else text for text in cells[0].source.splitlines())
    notebook.metadata.pop("jupytext", None)
    for i, cell in enumerate(notebook.cells):  # the same notebook for the same source, build after build
        cell.id = f"cell-{i}"
    return notebook


def _is_line(text, line):
    """``text`` is ``line``, whatever comment follows it."""
    return text.split("#")[0].strip() == line


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


def notebook_parameters(stage, given):
    """The parameters a stage notebook was given: ``given`` is the snapshot of its globals the setup cell takes
    right after the parameters cell (and papermill's injected one), before any import can bind a module to a
    parameter's name (``tasks``, ``data``). Names the notebook itself assigns outside its parameters cell are
    left over from an earlier run in the same kernel (Colab's "Run all" again) and are dropped; anything else
    reaches ``config.load_params``, which rejects unknown names. On Colab, a /content/drive path mounts Drive."""
    from lib.config import STAGES
    stem = STAGES[stage].notebook
    own = _assigned_outside_parameters(REPO_ROOT / "notebooks" / f"{stem}.py")
    values = {name: value for name, value in given.items() if name not in own}
    if on_colab() and any(str(value).startswith(DRIVE) for value in _strings(values)):
        mount_drive("a parameter names a path there")
    return values


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


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
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
