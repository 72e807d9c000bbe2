"""Run the stage notebooks of a profile in order with papermill (the book is built separately: make book).

    python -m lib.pipeline --profile smoke                      # every stage
    python -m lib.pipeline --profile cpu --stages distill,glue  # some stages
    python -m lib.pipeline -p max_steps=20 --stages distill     # override a parameter (YAML value syntax)
    python -m lib.pipeline --help                               # every stage's parameters, with their help

The notebooks' jupytext sources (notebooks/NN_stage.py) are converted in memory, so there is no second
copy to keep in sync. Every stage's parameters are validated, and its inputs and output folders checked
(lib.preflight), before the first stage starts. Executed notebooks go to book/stages/<profile>/ (one folder
per profile, so a smoke run never overwrites a real one). Stage 2 also runs without papermill, on several
processes: ``torchrun -m lib.distill`` (lib/distill.py).
"""
import argparse
import dataclasses
import sys
import time
import typing
from pathlib import Path

from lib import REPO_ROOT, config

NOTEBOOKS = REPO_ROOT / "notebooks"
STAGES_OUT = REPO_ROOT / "book" / "stages"


class StageFailed(RuntimeError):
    def __init__(self, stage, output, cause):
        self.stage = stage
        super().__init__(f"stage {stage!r} failed (executed notebook with the traceback: {output}):\n{cause}")


def read_notebook(stage):
    import jupytext
    source = NOTEBOOKS / f"{config.STAGES[stage].notebook}.py"
    if not source.is_file():
        raise FileNotFoundError(f"stage {stage!r}: notebook source {source} is missing")
    return jupytext.read(source)


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
