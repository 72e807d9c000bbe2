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
# None = the value from params/<profile>/05_latency.yaml. Each comment is the parameter's help
# (lib/config.py, `python -m lib.pipeline --help`).
profile = "smoke"  # named parameter set, params/<profile>/: smoke, cpu, t4 (a Colab GPU), paper
mirror = None  # local hub mirror folder (else $DISTILBERT_MIRROR, else the hub)
seed = None  # random seed (56: the authors')
run_dir = None  # checkpoints and models (big, not committed); default runs/<profile>, on Colab Drive
results_dir = None  # small JSON results with provenance; default results/<profile>, on Colab Drive
models = None  # label -> model id or path (config-only ids are timed with random weights)
sentences_dataset = None  # dataset of the timed sentences (the paper: STS-B dev)
sentences_task = None  # its GLUE task
max_examples = None  # sentence pairs timed; None: the whole dev set
batch_size = None  # sentences per forward pass
num_threads = None  # torch threads; 0: torch's default
warmup = None  # untimed calls per model first
repeats = None  # timed passes over the sentences (pass totals and per-example medians)
seq_lengths = None  # sweep: sequence lengths
batch_sizes = None  # sweep: batch sizes
sweep_max_tokens = None  # skip sweep points with batch_size * seq_len above this
precisions = None  # sweep precisions; fp16, bf16 on GPU only (bf16: capability >= 8)
quantize = None  # also time the student with int8 dynamic quantization of its Linear layers
device = None  # cpu or cuda
_project_commit = None  # lib.pipeline: this run's commit (the book links it); the Colab copy: the commit it clones

# %% tags=["hide-cell"]
# Setup: put this project on sys.path, found by its lib/colab.py (a bare `lib` folder is not enough: Colab's parent
# folder, /, holds the system's /lib) in the working directory, or its parent when Jupyter runs in notebooks/.
# The Colab copy (python -m lib.colab) clones the project first and starts there.
import os, sys  # noqa: E401
sys.path[:0] = [d for d in (os.getcwd(), os.path.dirname(os.getcwd())) if os.path.isfile(f"{d}/lib/colab.py")][:1]

# %%
import pandas as pd  # noqa: E402

import lib  # noqa: E402  (No module named 'lib': run from the project, or open the Colab link)
from lib import config, latency, plots  # noqa: E402

params = lib.notebook_setup("latency", globals())  # the parameters cell over the profile's file
config.as_dict(params)

# %%
record = latency.run_stage(params)  # times the models, writes results/<profile>/latency.json
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
