"""lib: the small library behind the DistilBERT reproduction notebooks.

One module per concern: config (stage parameters), hub (hub-or-mirror loading), smoke (the offline
synthetic profile), data, models, losses, training, tasks, metrics, latency, results, plots.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

import warnings

# tqdm.auto falls back to text bars in kernels without ipywidgets (papermill runs); that is what we want
warnings.filterwarnings("ignore", message="IProgress not found")


def quiet_logs():
    """Stage notebooks: keep transformers' errors, drop its per-load reports and bars (dozens per sweep)."""
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
