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
# # Stage 3: GLUE (Table 1)
#
# Each model is fine-tuned on each GLUE task for several seeds and evaluated on the dev set, like the paper
# (medians of 5 seeds there). DistilBERT takes no `token_type_ids`; the BERT teacher does, so each model gets
# the inputs it expects. Every (model, task, seed) result is its own JSON file: an interrupted sweep resumes
# where it stopped, and finished results are not recomputed unless `recompute=True`.

# %% tags=["parameters", "hide-cell"]
# None = the value from params/<profile>/03_glue.yaml; see lib/config.py:GlueParams for meanings.
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
glue_dataset = None
tasks = None
max_length = None
task_distill = None
task_alpha = None
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
from lib import config, plots, results, tasks  # noqa: E402

lib.quiet_logs()
params = config.load_params("glue", globals())
print(results.SCALE_LABELS.get(params.profile, params.profile))
config.as_dict(params)

# %%
started = time.perf_counter()
runs = tasks.run_sweep(params.models, tasks.stage_tasks(params), params.seeds, params,
                       params.path("results_dir") / "glue")
summary = tasks.summarize(runs, teacher=params.distill_teacher)
print(f"{len(runs)} fine-tuning runs; GLUE dev scores (median over {len(params.seeds)} seed(s)), {params.profile} scale:")
tasks.score_table(summary).round(1)

# %% [markdown]
# ## Retention: student / teacher, per task
# The paper's headline: DistilBERT keeps 97% of BERT-base's GLUE score (77.0 / 79.5).

# %%
if {"teacher", "student"} <= set(params.models):
    kept = tasks.retention(summary, "student", params.distill_teacher) * 100
    plots.show(plots.bars(kept.index, kept.values, "student / teacher, GLUE dev (%)", "retention (%)"),
               caption=f"GLUE retention per task ({params.profile} scale)")

# %%
results.write_result(params, "glue", {"summary": summary.to_dict(orient="records"), "runs": len(runs)},
                     time.perf_counter() - started)
