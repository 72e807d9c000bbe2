"""Run the stage notebooks of a profile in order with papermill (the book is built separately: make book).

    python -m lib.pipeline --profile smoke                      # every stage
    python -m lib.pipeline --profile cpu --stages distill,glue  # some stages
    python -m lib.pipeline -p max_steps=20 --stages distill     # override a parameter (YAML value syntax)
    python -m lib.pipeline --help                               # every stage's parameters, with their help

The notebooks' jupytext sources (notebooks/NN_stage.py) are converted in memory, so there is no second
copy to keep in sync; their short parameters cells are filled in with every parameter of the stage and its help,
from lib/config.py (``read_notebook``). Every stage's parameters are validated, and its inputs and output folders
checked (lib.preflight), before the first stage starts. Executed notebooks go to book/stages/<profile>/ (one folder
per profile, so a smoke run never overwrites a real one). The stages are lib.config.STAGES: each notebook runs its
stage with ``lib.run_stage(params)``. Stage 2 also runs without papermill, on several processes: ``torchrun -m
lib.distill`` (lib/distill.py, through ``stage_main``).
"""
import argparse
import ast
import dataclasses
import sys
import time
import typing
from pathlib import Path

from lib import REPO_ROOT, colab, config

NOTEBOOKS = REPO_ROOT / "notebooks"
STAGES_OUT = REPO_ROOT / "book" / "stages"


class StageFailed(RuntimeError):
    def __init__(self, stage, output, cause):
        self.stage = stage
        super().__init__(f"stage {stage!r} failed (executed notebook with the traceback: {output}):\n{cause}")


def read_notebook(stage):
    """Stage ``stage``'s notebook as it runs and as Colab opens it: its jupytext source, the parameters cell listing
    every parameter (``parameters_cell``). Every reader of the stage notebooks goes through here."""
    import jupytext
    source = NOTEBOOKS / f"{config.STAGES[stage].notebook}.py"
    if not source.is_file():
        raise FileNotFoundError(f"stage {stage!r}: notebook source {source} is missing")
    notebook = jupytext.read(source)
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{source}: expected one cell tagged parameters, found {len(cells)}")
    cells[0].source = parameters_cell(stage, cells[0].source)
    return notebook


def parameters_cell(stage, source):
    """The full parameters cell of ``stage`` from its tracked one (``source``: comments starting with
    lib.colab.PARAMETERS_MARKER, then a few statements, e.g. ``profile = "smoke"``): the leading comments, then every
    field of the stage's parameter class in order as ``name = value  # help`` (the value the tracked cell assigns
    it, else None: the profile's), then the tracked cell's other statements as written, then ``_project_commit =
    None`` (which lib.pipeline's runs and the Colab copies set, and lib.colab finds the cell by). So the tracked
    sources stay short and the help is written once, in lib/config.py (lib.config.param)."""
    tree, lines = ast.parse(source), source.splitlines()
    names = {f.name for f in dataclasses.fields(config.STAGES[stage].params)}
    given, others = {}, []
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id in names:
            given[target.id] = ast.get_source_segment(source, node)  # without the comment: the help replaces it
        else:
            others += lines[node.lineno - 1:node.end_lineno]
    first = tree.body[0].lineno - 1 if tree.body else len(lines)
    comments = [line for line in lines[:first] if line.strip()]
    fields = [f"{given.get(name, f'{name} = None')}  # {help}"
              for name, _, help in config.parameter_help(config.STAGES[stage].params)]
    commit = [] if "_project_commit" in _assigned(tree) else [f"{colab.COMMIT_LINE}  # {colab.COMMIT_HELP}"]
    return "\n".join([*comments, *fields, *others, *commit])


def _assigned(tree):
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def run_stage(stage, profile="smoke", overrides=None, output_dir=None, log_output=True):
    """Execute one stage notebook through papermill; returns the executed notebook's path."""
    import papermill
    from lib.results import git_commit
    parameters = {"profile": profile, **(overrides or {})}
    config.load_params(stage, **parameters)  # fail fast, before a kernel starts
    # the commit this stage runs from: the book's stage note links it (book/_ext/stage_pages.py). An executed
    # notebook never clones (only the Colab copies hold clone code); those get their commit from lib.colab
    parameters["_project_commit"] = git_commit().removesuffix("-dirty")
    output_dir = Path(output_dir or STAGES_OUT / profile)
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / f"{config.STAGES[stage].notebook}.ipynb"
    try:
        papermill.execute_notebook(read_notebook(stage), str(output), parameters=parameters, cwd=str(REPO_ROOT),
                                   kernel_name="python3", log_output=log_output, progress_bar=False)
    except papermill.PapermillExecutionError as err:
        raise StageFailed(stage, output, f"{err.ename}: {err.evalue}") from None
    finally:
        if output.is_file():
            relative_paths(output)
    return output


def relative_paths(notebook_path):
    """Rewrite this checkout's absolute path as relative in an executed notebook (papermill's metadata, printed
    summaries): committed outputs name no machine's folders."""
    text = Path(notebook_path).read_text()
    for root in (str(REPO_ROOT) + "/", str(REPO_ROOT)):
        text = text.replace(root, "" if root.endswith("/") else ".")
    Path(notebook_path).write_text(text)


def run(profile="smoke", stages=None, overrides=None, output_dir=None, log_output=True):
    """Run ``stages`` (default: all, in order) for ``profile``; validates every stage's parameters first."""
    from lib import preflight
    stages = list(stages or config.STAGES)
    checked = [config.load_params(stage, profile=profile, **_for_stage(stage, overrides)) for stage in stages]
    for i, params in enumerate(checked):  # inputs an earlier stage of this run writes are checked when it starts
        preflight.check(params, output_dir or STAGES_OUT / profile, pending=stages[:i])
    outputs = []
    for i, stage in enumerate(stages, 1):
        print(f"\n=== [{i}/{len(stages)}] stage {stage} ({config.STAGES[stage].notebook}), profile {profile}", flush=True)
        start = time.perf_counter()
        outputs.append(run_stage(stage, profile, _for_stage(stage, overrides), output_dir, log_output))
        print(f"=== stage {stage} done in {time.perf_counter() - start:.0f} s -> {outputs[-1]}", flush=True)
    return outputs


def _for_stage(stage, overrides):
    """The overrides a stage accepts (a parameter given on the command line may belong to some stages only),
    numbers written as strings ("1e-3", which YAML 1.1 reads as a string) read as the number the field expects."""
    hints = typing.get_type_hints(config.STAGES[stage].params)
    return {k: config.coerce_number(v, hints[k]) for k, v in (overrides or {}).items() if k in hints}


def _names(stage):
    return {f.name for f in dataclasses.fields(config.STAGES[stage].params)}


def parse_overrides(pairs):
    overrides = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise config.ParameterError(pair, "write overrides as name=value (value in YAML syntax)")
        overrides[name.strip()] = config.read_yaml(value, name.strip(), f"-p {pair}")  # names the option
    return overrides


def stages_help(stages):
    """The parameters of ``stages`` with their defaults and help (lib.config.param), for --help."""
    lines = ["stage parameters (the default below, else params/<profile>/<notebook>.yaml; override with -p):"]
    for stage in stages:
        spec = config.STAGES[stage]
        lines.append(f"\n{stage} (notebooks/{spec.notebook}.py, params/<profile>/{spec.notebook}.yaml):")
        for name, default, help in config.parameter_help(spec.params):
            lines.append(f"  {name:<28}{help} [default: {default!r}]")
    return "\n".join(lines)


def stage_main(stage, argv=None, description=None):
    """A stage's command line without papermill (``python -m lib.distill``; torchrun runs it in every process):
    ``--profile``, ``-p name=value`` and ``--no-progress``; the parameters loaded and checked (lib.preflight) as in
    the notebook, then the stage's run function (lib.run_stage, through lib.config.STAGES). Returns the exit code."""
    import lib
    from lib import preflight
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=stages_help([stage]))
    parser.add_argument("--profile", default="smoke", help="parameter set in params/<profile>/ (default smoke)")
    parser.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="override a parameter")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        params = config.load_params(stage, profile=args.profile, **parse_overrides(args.param))
        preflight.check(params)  # the checks of the notebook and lib.pipeline, with the same messages
    except config.ParameterError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    lib.run_stage(params, progress=not args.no_progress)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=stages_help(config.STAGES))
    parser.add_argument("--profile", default="smoke", help="parameter set in params/<profile>/ (default smoke)")
    parser.add_argument("--stages", default=",".join(config.STAGES), help="comma-separated, default all")
    parser.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="override a parameter")
    parser.add_argument("--output-dir", help="where executed notebooks go (default book/stages/<profile>)")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    try:
        overrides = parse_overrides(args.param)
        unknown = [s for s in stages if s not in config.STAGES]
        if unknown:
            raise config.ParameterError("stages", f"unknown stage {unknown[0]!r}; stages: {list(config.STAGES)}")
        known = set().union(*(_names(s) for s in stages))
        for name in overrides:
            if name not in known:
                raise config.ParameterError(name, f"no stage among {stages} takes this parameter")
        run(args.profile, stages, overrides, args.output_dir)
    except (config.ParameterError, StageFailed, FileNotFoundError) as err:
        print(f"\nERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
