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
# Setup: on Colab, clone and install this project at the commit that produced this notebook; everywhere, work
# from the project root.
import os, subprocess, sys  # noqa: E401
_HOME = "/content/distilbert-reproduced"
if "google.colab" in sys.modules and not os.path.isdir(_HOME):
    subprocess.run(["git", "clone", "-q", "https://github.com/distilbert-reproduced/distilbert-reproduced", _HOME], check=True)
    subprocess.run(["git", "-C", _HOME, "checkout", "-q", _project_commit or "main"])  # main if that commit is not pushed
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", f"{_HOME}/requirements.txt"], check=True)
for _root in (os.getcwd(), os.path.dirname(os.getcwd()), _HOME):
    if os.path.isdir(os.path.join(_root, "lib")):
        break
os.chdir(_root)
sys.path.insert(0, _root)

# %%
import lib  # noqa: E402
from lib import config, finetune  # noqa: E402

params = config.load_params("imdb_squad", globals())
lib.notebook_setup(params)
config.as_dict(params)

# %%
record, summary = finetune.run_stage(params, config.IMDB_SQUAD)  # writes results/<profile>/imdb_squad.json
print(f"{record.runs} fine-tuning runs, {params.profile} scale (median over {len(params.seeds)} seed(s)):")
summary[summary.metric.isin(["accuracy", "exact_match", "f1"])].round(2)
