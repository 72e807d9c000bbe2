"""lib: the small library behind the DistilBERT reproduction notebooks.

One module per concern: config (stage parameters and the stage registry), tasks (the task registry), glue (the
GLUE benchmark's view of it), paper (the paper's numbers and model labels), hub (hub-or-mirror loading), smoke (the
offline synthetic profile), data, teacher (loading, masked-LM check and MLM-head adaptation: stage 1), models (the
student, model cards), losses (the loss-term registry), training (the distillation loop), checkpoints (slots, run
locks, signals), distill (stage 2, for the notebook and torchrun), finetune (GLUE, IMDb and SQuAD fine-tuning),
metrics, latency, quantize (int8, ONNX), results (the results schema and its reader), report (the book's tables),
findings (the scorecard), render (their HTML), budget (T4-hours), preflight, plots, pipeline (the stage runner),
colab (Colab notebooks and defaults).
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_path(path):
    """``path`` (~ expanded) as an absolute Path: a relative one is relative to the repository root, wherever the
    process runs (papermill runs notebooks from notebooks/, the book from book/)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


import warnings

# tqdm.auto falls back to text bars in kernels without ipywidgets (papermill runs); that is what we want
warnings.filterwarnings("ignore", message="IProgress not found")


def notebook_setup(stage, namespace):
    """First call of every stage notebook, with its globals: returns the stage's parameters, what its parameters
    cell set over the profile's file (lib.colab.load_notebook_params). Works from the project root; pins the code's
    commit for the stage's results; quieter third-party logs (transformers reports every model load, a sweep loads
    dozens); on Colab, checks the GPU against the profile (lib.colab). Shows the scale the notebook runs at and the
    parameters. The stage then runs with ``run_stage(params)``."""
    import os
    import sys

    import transformers

    from lib import colab, config, preflight
    from lib.results import SCALE_LABELS, pin_commit
    os.chdir(REPO_ROOT)  # as lib.pipeline runs a stage, wherever Jupyter started (notebooks/, Colab's /content)
    params = colab.load_notebook_params(stage, namespace)
    pin_commit()  # results of this stage name the code it started with
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if "google.colab" in sys.modules:
        colab.check_runtime(params)
    preflight.check(params)  # seconds, before any model loads (after Drive is mounted)
    print(SCALE_LABELS.get(params.profile, params.profile))
    from IPython.display import display
    display(config.as_dict(params))  # what this run is: every parameter's value, shown under the cell
    return params


def run_stage(params, progress=True):
    """Run the stage ``params`` are the parameters of, through its run function in lib.config.STAGES
    (``run(params, progress=True) -> result``, one signature for every stage); returns what it returns. The stage
    notebooks and the stages' command lines (lib.pipeline.stage_main) call this."""
    from lib import config
    return config.STAGES[config.stage_of(params)].run_function()(params, progress=progress)
