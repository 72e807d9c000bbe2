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
# Stage parameters, lib.config.ImdbSquadParams: set any here as `name = value`, e.g. `seed = 7`; one left out,
# or None, takes params/<profile>/04_imdb_squad.yaml's value (`python -m lib.pipeline --help` lists them all). The
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

params = lib.notebook_setup("imdb_squad", globals())  # the parameters cell over the profile's file

# %%
record, summary = lib.run_stage(params)  # lib.finetune.run: writes results/<profile>/imdb_squad.json
print(f"{record.runs} fine-tuning runs, {params.profile} scale (median over {len(params.seeds)} seed(s)):")
summary[summary.metric.isin(["accuracy", "exact_match", "f1"])].round(2)

# %% [markdown]
# ## The budget rule's measurements
# Each laddered task's teacher runs, scored on the train-split rows held out of training (`heldout_rows`), never the
# dev split: the first rung that reaches its target became the task's budget for every model and seed
# (`lib.budget_rule`; the rule is stated in the profile's parameter file). Empty without a ladder.

# %%
from lib import report  # noqa: E402

report.budget_table(record)
