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
# None = the value from params/<profile>/05_latency.yaml; see lib/config.py:LatencyParams for meanings.
profile = "smoke"  # "t4" on a Colab GPU runtime; smoke, cpu, t4, paper: params/<profile>/
mirror = None
seed = None
run_dir = None
results_dir = None
models = None
sentences_dataset = None
sentences_task = None
max_examples = None
batch_size = None
num_threads = None
warmup = None
repeats = None
seq_lengths = None
batch_sizes = None
sweep_max_tokens = None
precisions = None
quantize = None
device = None
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
import time  # noqa: E402

import lib  # noqa: E402
from lib import colab, config, latency, plots, results  # noqa: E402

params = config.load_params("latency", colab.notebook_parameters("latency", _params_given))
lib.notebook_setup(params)
config.as_dict(params)

# %%
started = time.perf_counter()
models = latency.load_models(params)
table3 = latency.table3(params, models=models)
table3

# %%
sweep = latency.sweep_models(params, models=models)
plots.show(latency.sweep_figure(sweep), caption=f"Latency against sequence length ({params.profile} profile)")

# %% [markdown]
# ## Size against quality
# Each timed model's latency relative to the reference, against its GLUE score from this profile's Table 1 run
# (`glue.json` in the same results folder, when it exists), beside the paper's ELMo, BERT-base and DistilBERT.

# %%
glue_file = params.path("results_dir") / "glue.json"
glue_scores = {}
if glue_file.exists():
    glue_scores = {row["model"]: row["median"] for row in results.read_result(glue_file)["summary"]
                   if row["task"] == "glue" and row["metric"] == "score"}
reference = table3[0]["reference"]
measured = {row["model"]: {"params": row["parameters"], "latency": row["per_example_ms_median"],
                           "size_mb": row["size_mb"], "glue_score": glue_scores.get(row["model"])} for row in table3}
size_quality = latency.size_quality_table(measured, reference=reference)
plots.show(plots.size_quality_figure(size_quality),
           caption=f"Relative CPU latency against GLUE dev score: the paper's models and this run's ({params.profile} "
                   f"scale; latency relative to {reference}, GLUE scores from {glue_file.name if glue_scores else 'no run yet'})")
size_quality.round(3)

# %%
results.write_result(params, "latency", {"table3": table3, "sweep": sweep.to_dict(orient="records"),
                                          "size_quality": size_quality.to_dict(orient="records")},
                     time.perf_counter() - started)
