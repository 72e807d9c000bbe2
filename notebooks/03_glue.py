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
# Stage parameters, lib.config.GlueParams: set any here as `name = value`, e.g. `seed = 7`; one left out,
# or None, takes params/<profile>/03_glue.yaml's value (`python -m lib.pipeline --help` lists them all). The
# Colab copy and the executed notebooks list every parameter here with its help (lib.pipeline.read_notebook).
profile = "smoke"

# %% tags=["hide-cell"]
# Setup: put this project on sys.path, found by its lib/colab.py (a bare `lib` folder is not enough: Colab's parent
# folder, /, holds the system's /lib) in the working directory, or its parent when Jupyter runs in notebooks/.
# The Colab copy (python -m lib.colab) clones the project first and starts there.
import os, sys  # noqa: E401
sys.path[:0] = [d for d in (os.getcwd(), os.path.dirname(os.getcwd())) if os.path.isfile(f"{d}/lib/colab.py")][:1]

# %%
import lib  # noqa: E402  (No module named 'lib': run from the project, or open the Colab link)
from lib import finetune, plots  # noqa: E402

params = lib.notebook_setup("glue", globals())  # the parameters cell over the profile's file

# %%
record, summary = lib.run_stage(params)  # lib.finetune.run: writes results/<profile>/glue.json
print(f"{record.runs} fine-tuning runs; GLUE dev scores (median over {len(params.seeds)} seed(s)), {params.profile} scale:")
finetune.score_table(summary).round(1)

# %% [markdown]
# ## The budget rule's measurements
# Each laddered task's teacher runs, scored on the train-split rows held out of training (`heldout_rows`), never the
# dev split: the first rung that reaches its target became the task's budget for every model and seed
# (`lib.budget_rule`; the rule is stated in the profile's parameter file). Empty without a ladder.

# %%
from lib import report  # noqa: E402

report.budget_table(record)

# %% [markdown]
# ## Retention: student / teacher, per task
# Per task only. The GLUE score's retention, set beside the paper's 97 %, is computed over the tasks the teacher
# learns at this scale (their rule and the value: the book's Table 1 page, `lib.report.counted_glue_retention`).

# %%
if {"teacher", "student"} <= set(params.models):
    kept = finetune.retention_fraction(summary, "student", params.distill_teacher) * 100
    plots.show(plots.bars(kept.index, kept.values, "student / teacher, GLUE dev (%)", "retention (%)"),
               caption=f"GLUE retention per task ({params.profile} scale)")
