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
# # Stage 4: IMDb and SQuAD 1.1 (Table 2)
#
# IMDb sentiment (test accuracy) and SQuAD 1.1 extractive QA (dev EM / F1, overlapping 384-token windows with
# stride 128). With `squad_distill=True` the student is fine-tuned with a second distillation step from a
# teacher already fine-tuned on SQuAD — the paper's "DistilBERT (D)".

# %% tags=["parameters", "hide-cell"]
# None = the value from params/<profile>/04_imdb_squad.yaml; see lib/config.py:ImdbSquadParams for meanings.
profile = "smoke"
mirror = None
seed = None
run_dir = None
results_dir = None
models = None
seeds = None
learning_rate = None
n_epoch = None
batch_size = None
warmup_prop = None
weight_decay = None
max_train_samples = None
max_eval_samples = None
precision = None
recompute = None
task_overrides = None
distill_teacher = None
imdb_dataset = None
squad_dataset = None
run_imdb = None
run_squad = None
imdb_max_length = None
imdb_truncation = None
squad_max_length = None
doc_stride = None
max_answer_length = None
n_best = None
squad_distill = None
squad_teacher = None
squad_alpha = None
temperature = None
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
from lib import config, results, tasks  # noqa: E402

lib.quiet_logs()
params = config.load_params("imdb_squad", globals())
print(results.SCALE_LABELS.get(params.profile, params.profile))
config.as_dict(params)

# %%
started = time.perf_counter()
runs = tasks.run_sweep(params.models, tasks.stage_tasks(params), params.seeds, params,
                       params.path("results_dir") / "imdb_squad")
summary = tasks.summarize(runs, teacher=params.distill_teacher)
print(f"{len(runs)} fine-tuning runs, {params.profile} scale (median over {len(params.seeds)} seed(s)):")
summary[summary.metric.isin(["accuracy", "exact_match", "f1"])].round(2)

# %%
results.write_result(params, "imdb_squad", {"summary": summary.to_dict(orient="records"), "runs": len(runs)},
                     time.perf_counter() - started)
