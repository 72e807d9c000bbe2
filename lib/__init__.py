"""lib: the small library behind the DistilBERT reproduction notebooks.

One module per concern: config (stage parameters), hub (hub-or-mirror loading), smoke (the offline
synthetic profile), data, models, losses, training, tasks, metrics, latency, results, plots, colab (Colab
notebooks and defaults).
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

import warnings

# tqdm.auto falls back to text bars in kernels without ipywidgets (papermill runs); that is what we want
warnings.filterwarnings("ignore", message="IProgress not found")


def notebook_setup(params):
    """First call of every stage notebook: pins the code's commit for the stage's results; quieter third-party logs (transformers reports every model load, a
    sweep loads dozens); on Colab, check the GPU against the profile (lib.colab). Prints the scale the notebook runs at."""
    import sys

    import transformers

    from lib.results import SCALE_LABELS, pin_commit
    pin_commit()  # results of this stage name the code it started with
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if "google.colab" in sys.modules:
        from lib import colab
        colab.check_runtime(params)
    print(SCALE_LABELS.get(params.profile, params.profile))
