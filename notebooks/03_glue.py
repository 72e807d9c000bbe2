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
# None = the value from params/<profile>/03_glue.yaml. Each comment is the parameter's help
# (lib/config.py, `python -m lib.pipeline --help`).
profile = "smoke"  # named parameter set, params/<profile>/: smoke, cpu, t4 (a Colab GPU), paper
mirror = None  # local hub mirror folder (else $DISTILBERT_MIRROR, else the hub)
seed = None  # random seed (56: the authors')
run_dir = None  # checkpoints and models (big, not committed); default runs/<profile>, on Colab Drive
results_dir = None  # small JSON results with provenance; default results/<profile>, on Colab Drive
models = None  # label -> model id or path, e.g. {teacher: ..., student: ...}
seeds = None  # one fine-tuning run per seed
learning_rate = None  # AdamW peak learning rate
n_epoch = None  # epochs of fine-tuning
batch_size = None  # sequences per batch
warmup_prop = None  # share of the steps with linear warmup, then linear decay
weight_decay = None  # AdamW weight decay
max_train_samples = None  # training examples per task at most (None: all)
max_eval_samples = None  # evaluation examples per task at most (None: all)
precision = None  # auto (bf16 on capability >= 8, fp16 below, fp32 on CPU), fp32, fp16, bf16
recompute = None  # re-run (model, task, seed) results that already exist
task_overrides = None  # task -> {name: value} for the fields above, e.g. {squad: {n_epoch: 2}}
distill_teacher = None  # label in models whose fine-tuned copy teaches the (D) runs
glue_dataset = None  # GLUE dataset id
tasks = None  # GLUE task names (lib.glue)
max_length = None  # tokens per example
task_distill = None  # extension: distil from a fine-tuned teacher during fine-tuning
task_alpha = None  # task_distill: task_alpha * task loss + (1 - task_alpha) * T^2 * KL
temperature = None  # softmax temperature of task_distill
_project_commit = None  # lib.pipeline: this run's commit (the book links it); the Colab copy: the commit it clones

# %% tags=["hide-cell"]
# Setup: put this project on sys.path, found by its lib/colab.py (a bare `lib` folder is not enough: Colab's parent
# folder, /, holds the system's /lib) in the working directory, or its parent when Jupyter runs in notebooks/.
# The Colab copy (python -m lib.colab) clones the project first and starts there.
import os, sys  # noqa: E401
sys.path[:0] = [d for d in (os.getcwd(), os.path.dirname(os.getcwd())) if os.path.isfile(f"{d}/lib/colab.py")][:1]

# %%
import lib  # noqa: E402  (No module named 'lib': run from the project, or open the Colab link)
from lib import config, finetune, plots  # noqa: E402

params = lib.notebook_setup("glue", globals())  # the parameters cell over the profile's file
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
