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
# # Stage 1: the teacher
#
# Distillation can only pass on what the teacher knows. This stage loads the masked-LM teacher, reports
# its size and checks it on held-out text (masked-token accuracy, perplexity, a few fill-mask examples).
# A teacher without a masked-LM head — the offline mirror's `all-MiniLM-L6-v2` is a sentence encoder —
# first gets one trained on the corpus (`adapt_mlm`), and the adapted teacher is saved as a model
# directory for stage 2. The work is done by `lib.teacher`; this notebook narrates and shows.

# %% tags=["parameters", "hide-cell"]
# Stage parameters, lib.config.TeacherParams: set any here as `name = value`, e.g. `seed = 7`; one left out,
# or None, takes params/<profile>/01_teacher.yaml's value (`python -m lib.pipeline --help` lists them all). The
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
import lib.teacher  # noqa: E402  (as lib.teacher: the parameter `teacher` keeps its name)
from lib import models, plots  # noqa: E402

params = lib.notebook_setup("teacher", globals())  # the parameters cell over the profile's file

# %% [markdown]
# ## The teacher, checked and adapted
# `lib.teacher.run` (stage 1's run function) loads the teacher and its tokenizer (both ids resolve against the offline mirror
# when one is configured, `lib.hub`), tokenizes the corpus and keeps `heldout_fraction` of it aside. It measures
# masked-token accuracy and perplexity on the held-out sequences, trains the masked-LM head when `adapt_mlm` asks
# for it (`auto`: only when the checkpoint has none), measures again, saves the teacher to `run_dir/teacher` for
# stage 2 with its model card (`README.md`) and writes `results/<profile>/teacher.json`. Run again with the same
# parameters (after a disconnect, say), it reuses that teacher when the results file records its weights' digest
# (`lib.teacher.saved_teacher`; `recompute = True` prepares it again).

# %%
prepared = lib.run_stage(params)  # lib.teacher.run, through lib.config.STAGES
model = prepared.teacher
print(f"teacher {params.teacher}: {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
      f"{models.count_parameters(model) / 1e6:.1f}M parameters, "
      f"masked-LM head {'present' if prepared.has_mlm_head else 'MISSING'}")
print(f"{len(prepared.train_set):,} training sequences, {len(prepared.heldout):,} held out")
print(f"adapted: {prepared.adapted}; masked-token accuracy {prepared.mlm_before['mlm_accuracy']:.3f} -> "
      f"{prepared.mlm_after['mlm_accuracy']:.3f}, perplexity {prepared.mlm_before['perplexity']:.1f} -> "
      f"{prepared.mlm_after['perplexity']:.1f}")

# %% [markdown]
# ## The adaptation curve
# With `adapt_top_layers` a list, the head is trained once per number of top layers, each from the same start, and
# scored every `adapt_eval_every` steps on selection sequences held out of training (other ones than the reported
# held-out sequences). The teacher kept is the (layers, step) of the highest selection accuracy
# (`lib.teacher.adapt`). Nothing is drawn when the head was not trained.

# %%
import pandas as pd  # noqa: E402

adaptation = prepared.record.adaptation
if adaptation:
    plots.show(plots.adaptation_curves(adaptation["runs"]),
               caption=f"Selection accuracy during the MLM-head adaptation ({params.profile} scale); kept: top "
                       f"{adaptation['chosen']['top_layers']} layers at step {adaptation['chosen']['step']}")

# %% [markdown]
# The kept adaptation's masked-LM training loss (empty when the head was not trained).

# %%
pd.DataFrame(prepared.loss_log)

# %% [markdown]
# ## A few fill-mask examples

# %%
from transformers import pipeline  # noqa: E402

tokenizer = prepared.tokenizer
fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=model.device)
examples = [tokenizer.decode(prepared.heldout[i]["input_ids"][1:13]) for i in range(3)]
for text in examples:
    words = text.split()
    words[len(words) // 2] = tokenizer.mask_token
    masked = " ".join(words)
    print(masked, "->", [(p["token_str"], round(p["score"], 3)) for p in fill(masked, top_k=3)])

# %% [markdown]
# The teacher's logits at one masked position, kept for the Background chapter's temperature figure
# (`results/<profile>/teacher_logits.json`): the first held-out example whose correct token is among the teacher's
# top candidates, with the full-vocabulary normaliser at each temperature of the figure.

# %%
logits = lib.teacher.write_teacher_logits(params, model, tokenizer, prepared.heldout)
print(logits.text, "->", logits.tokens[:5], "| correct:", logits.answer, "rank", logits.answer_rank)
