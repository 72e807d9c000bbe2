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
# Stage parameters, lib.config.LatencyParams: set any here as `name = value`, e.g. `seed = 7`; one left out,
# or None, takes params/<profile>/05_latency.yaml's value (`python -m lib.pipeline --help` lists them all). The
# Colab copy and the executed notebooks list every parameter here with its help (lib.pipeline.read_notebook).
profile = "smoke"

# %% tags=["hide-cell"]
# Setup: put this project on sys.path, found by its lib/colab.py (a bare `lib` folder is not enough: Colab's parent
# folder, /, holds the system's /lib) in the working directory, or its parent when Jupyter runs in notebooks/.
# The Colab copy (python -m lib.colab) clones the project first and starts there.
import os, sys  # noqa: E401
sys.path[:0] = [d for d in (os.getcwd(), os.path.dirname(os.getcwd())) if os.path.isfile(f"{d}/lib/colab.py")][:1]

# %%
import pandas as pd  # noqa: E402

import lib  # noqa: E402  (No module named 'lib': run from the project, or open the Colab link)
from lib import latency, plots  # noqa: E402

params = lib.notebook_setup("latency", globals())  # the parameters cell over the profile's file

# %%
record = lib.run_stage(params)  # lib.latency.run: times the models, writes results/<profile>/latency.json
pd.DataFrame(record.table3)

# %%
plots.show(latency.sweep_figure(pd.DataFrame(record.sweep)),
           caption=f"Latency against sequence length ({params.profile} profile)")

# %% [markdown]
# ## Size against quality
# Each timed model's latency relative to the reference, against its GLUE score from this profile's Table 1 run
# (`glue.json` in the same results folder, when it exists), beside the paper's ELMo, BERT-base and DistilBERT.

# %%
size_quality = pd.DataFrame(record.size_quality)
reference = record.table3[0]["reference"]
scored = bool(latency.glue_scores(params.path("results_dir")))
plots.show(plots.size_quality_figure(size_quality),
           caption=f"Relative CPU latency against GLUE dev score: the paper's models and this run's ({params.profile} "
                   f"scale; latency relative to {reference}, GLUE scores from {'glue.json' if scored else 'no run yet'})")
size_quality.round(3)
