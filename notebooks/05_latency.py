# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Stage 5: size and speed (Table 3)
#
# The paper timed a full pass over the STS-B dev set (1,500 sentence pairs) on CPU with batch size 1:
# BERT-base 668 s, DistilBERT 410 s (ratio 0.61). Latency does not depend on weight values, so architectures
# built from configs with random weights time the same as trained ones. Models are timed interleaved, example
# by example, so both see the same machine state; the tokenizer is timed separately.

# %% tags=["parameters", "hide-cell"]
# None = the value from params/<profile>/05_latency.yaml; see lib/config.py:LatencyParams for meanings.
profile = "smoke"
mirror = None
seed = None
run_dir = None
results_dir = None
models = None
sentences_dataset = None
sentences_task = None
max_examples = None
batch_size = None
num_threads = None
warmup = None
repeats = None
seq_lengths = None
batch_sizes = None
sweep_max_tokens = None
precisions = None
quantize = None
device = None
_project_commit = None  # set by lib.pipeline: the commit a Colab run of this notebook clones

# %% tags=["hide-cell"]
# Setup. On Colab: clone this project at the commit that produced this notebook, install it, mount Drive when
# run_dir/results_dir are on Drive, check the GPU. Elsewhere it only finds the project root.
import os, subprocess, sys  # noqa: E401
_REPO, _HOME = "https://github.com/distilbert-reproduced/distilbert-reproduced", "/content/distilbert-reproduced"
if "google.colab" in sys.modules:
    _commit = _project_commit or "main"
    if not os.path.isdir(_HOME):
        subprocess.run(["git", "clone", "--quiet", _REPO, _HOME], check=True)
        if subprocess.run(["git", "-C", _HOME, "checkout", "--quiet", _commit]).returncode != 0:
            print(f"warning: commit {_commit} is not on the remote; using main")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", f"{_HOME}/requirements.txt"], check=True)
    if any(str(d or "").startswith("/content/drive") for d in (run_dir, results_dir)):
        from google.colab import drive
        drive.mount("/content/drive")
    import torch
    _gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"Colab runtime: {_gpu or 'CPU only'}; project at {_commit}")
    if profile in ("t4", "paper") and _gpu is None:
        import warnings
        warnings.warn(f"profile {profile!r} needs a GPU: Runtime > Change runtime type > T4 GPU, then re-run")
    elif profile == "t4" and "T4" not in _gpu:
        print(f"note: the t4 profile is sized for a 16 GB T4; this runtime has {_gpu}")
for _root in (os.getcwd(), os.path.dirname(os.getcwd()), _HOME):
    if os.path.isdir(os.path.join(_root, "lib")):
        break
os.chdir(_root)
sys.path.insert(0, _root)

# %%
import time  # noqa: E402

import lib  # noqa: E402
from lib import config, latency, plots, results  # noqa: E402

lib.quiet_logs()
params = config.load_params("latency", globals())
print(results.SCALE_LABELS.get(params.profile, params.profile))
config.as_dict(params)

# %%
started = time.perf_counter()
models = latency.load_models(params)
table3 = latency.table3(params, models=models)
table3

# %%
sweep = latency.sweep_models(params, models=models)
plots.show(latency.sweep_figure(sweep), caption=f"Latency against sequence length ({params.profile} profile)")

# %%
results.write_result(params, "latency", {"table3": table3, "sweep": sweep.to_dict(orient="records")},
                     time.perf_counter() - started)
