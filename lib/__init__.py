"""lib: the small library behind the DistilBERT reproduction notebooks.

One module per concern: config (stage parameters and the stage registry), glue (the GLUE task spec), paper (the
paper's numbers and model labels), hub (hub-or-mirror loading), smoke (the offline synthetic profile), data,
models, losses, training, checkpoints, distill (stage 2 without papermill), finetune (GLUE, IMDb and SQuAD
fine-tuning), metrics, latency, quantize (int8, ONNX), results (the results schema and its reader), report (the
book's tables), render (their HTML), budget (T4-hours), preflight, plots, pipeline (the stage runner).
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


def notebook_setup(params):
    """First call of every stage notebook: pins the code's commit for the stage's results; quieter third-party logs (transformers reports every model load, a
    sweep loads dozens); on Colab, mount Drive for a run_dir/results_dir there and check the GPU against the
    profile. Prints the scale the notebook runs at."""
    import sys

    import transformers

    from lib.results import SCALE_LABELS, pin_commit
    pin_commit()  # results of this stage name the code it started with
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if "google.colab" in sys.modules:
        _colab_checks(params)
    __import__("lib.preflight").preflight.check(params)  # seconds, before any model loads (after Drive is mounted)
    print(SCALE_LABELS.get(params.profile, params.profile))


def _colab_checks(params):
    import warnings

    import torch
    if any(str(path).startswith("/content/drive") for path in (params.run_dir, params.results_dir)):
        from google.colab import drive
        drive.mount("/content/drive")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"Colab runtime: {gpu or 'CPU only'}")
    if params.profile in ("t4", "paper") and gpu is None:
        warnings.warn(f"profile {params.profile!r} needs a GPU: Runtime > Change runtime type > T4 GPU, then re-run")
    elif params.profile == "t4" and "T4" not in gpu:
        print(f"note: the t4 profile is sized for a 16 GB T4; this runtime has {gpu}")
