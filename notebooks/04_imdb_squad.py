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
# None = the value from params/<profile>/04_imdb_squad.yaml. Each comment is the parameter's help
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
imdb_dataset = None  # IMDb dataset id
squad_dataset = None  # SQuAD v1.1 dataset id
run_imdb = None  # fine-tune and evaluate on IMDb
run_squad = None  # fine-tune and evaluate on SQuAD
imdb_max_length = None  # tokens per IMDb review
imdb_truncation = None  # head | head+tail: which tokens of a long review are kept
squad_max_length = None  # tokens per SQuAD window
doc_stride = None  # tokens shared by consecutive windows of a long context
max_answer_length = None  # longest answer span, in tokens
n_best = None  # start and end candidates considered per window
squad_distill = None  # the paper's DistilBERT (D): a second distillation step on SQuAD
squad_teacher = None  # teacher already fine-tuned on SQuAD (for squad_distill)
squad_alpha = None  # squad_distill: squad_alpha * CE + (1 - squad_alpha) * T^2 * KL
temperature = None  # softmax temperature of squad_distill
_project_commit = None  # lib.pipeline: this run's commit (the book links it); the Colab copy: the commit it clones

# %% tags=["hide-cell"]
# Setup: put this project on sys.path, found by its lib/colab.py (a bare `lib` folder is not enough: Colab's parent
# folder, /, holds the system's /lib) in the working directory, or its parent when Jupyter runs in notebooks/.
# The Colab copy (python -m lib.colab) clones the project first and starts there.
import os, sys  # noqa: E401
sys.path[:0] = [d for d in (os.getcwd(), os.path.dirname(os.getcwd())) if os.path.isfile(f"{d}/lib/colab.py")][:1]

# %%
import lib  # noqa: E402  (No module named 'lib': run from the project, or open the Colab link)
from lib import config, finetune  # noqa: E402

params = lib.notebook_setup("imdb_squad", globals())  # the parameters cell over the profile's file
config.as_dict(params)

# %%
record, summary = finetune.run_stage(params, config.IMDB_SQUAD)  # writes results/<profile>/imdb_squad.json
print(f"{record.runs} fine-tuning runs, {params.profile} scale (median over {len(params.seeds)} seed(s)):")
summary[summary.metric.isin(["accuracy", "exact_match", "f1"])].round(2)
