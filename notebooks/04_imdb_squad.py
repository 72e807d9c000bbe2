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
profile = "smoke"  # "t4" on a Colab GPU runtime; smoke, cpu, t4, paper: params/<profile>/
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
_project_commit = None  # set by lib.pipeline or the Colab copy: the commit a Colab run clones

# %% tags=["hide-cell"]
# Setup. First a snapshot of what the parameters cell set, taken before any import can bind a module to a
# parameter's name (`tasks`, `data`); lib.colab.notebook_parameters reads it. On Colab, clone this project at the
# commit the notebook was made from and install its runtime requirements; everywhere, work from the project root.
_params_given = dict(globals())
import os, subprocess, sys  # noqa: E401, E402
_repository = None  # the Colab copy fills in the address from _config.yml (python -m lib.colab)
_HOME = "/content/distilbert-reproduced"
if "google.colab" in sys.modules and not os.path.isdir(_HOME):
    if _repository is None:
        raise RuntimeError("open this stage through an 'Open in Colab' link (README or book): that copy of the "
                           "notebook knows which repository to clone")
    subprocess.run(["git", "clone", "-q", _repository, _HOME], check=True)
    if _project_commit:  # the branch's head if that commit is not pushed
        subprocess.run(["git", "-C", _HOME, "checkout", "-q", _project_commit])
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", f"{_HOME}/requirements.txt"], check=True)
for _root in (os.getcwd(), os.path.dirname(os.getcwd()), _HOME):
    if os.path.isdir(os.path.join(_root, "lib")):
        break
os.chdir(_root)
sys.path.insert(0, _root)

# %%
import lib  # noqa: E402
from lib import colab, config, finetune  # noqa: E402

params = config.load_params("imdb_squad", colab.notebook_parameters("imdb_squad", _params_given))
lib.notebook_setup(params)
config.as_dict(params)

# %%
record, summary = finetune.run_stage(params, config.IMDB_SQUAD)  # writes results/<profile>/imdb_squad.json
print(f"{record.runs} fine-tuning runs, {params.profile} scale (median over {len(params.seeds)} seed(s)):")
summary[summary.metric.isin(["accuracy", "exact_match", "f1"])].round(2)
