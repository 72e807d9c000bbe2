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
glue_dataset = None
tasks = None
max_length = None
task_distill = None
task_alpha = None
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
from lib import colab, config, finetune, plots  # noqa: E402

params = config.load_params("glue", colab.notebook_parameters("glue", _params_given))
lib.notebook_setup(params)
config.as_dict(params)

# %%
record, summary = finetune.run_stage(params, config.GLUE)  # writes results/<profile>/glue.json
print(f"{record.runs} fine-tuning runs; GLUE dev scores (median over {len(params.seeds)} seed(s)), {params.profile} scale:")
finetune.score_table(summary).round(1)

# %% [markdown]
# ## Retention: student / teacher, per task
# The paper's headline: DistilBERT keeps 97% of BERT-base's GLUE score (77.0 / 79.5).

# %%
if {"teacher", "student"} <= set(params.models):
    kept = finetune.retention_fraction(summary, "student", params.distill_teacher) * 100
    plots.show(plots.bars(kept.index, kept.values, "student / teacher, GLUE dev (%)", "retention (%)"),
               caption=f"GLUE retention per task ({params.profile} scale)")
