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
# # Stage 2: distillation
#
# The student is a `DistilBertForMaskedLM` with half the teacher's layers, initialised from teacher layers
# (the authors' [0, 2, 4, 7, 9, 11] for a 12-layer teacher), and trained on masked text with the triple loss
#
# $$L = \alpha_{ce} \, T^2 \, \mathrm{KL}\big(p_t^{(T)} \,\|\, p_s^{(T)}\big) + \alpha_{mlm} \, L_{mlm} + \alpha_{cos} \, L_{cos}$$
#
# with the released weights 5 / 2 / 1 and $T = 2$ (`lib.losses`). Masking is dynamic, 15 % of tokens with
# frequency smoothing (`lib.data`); training is resumable from checkpoints in `run_dir` (`lib.training`,
# `lib.checkpoints`). The stage itself is `lib.distill.run`; this notebook narrates and shows.

# %% tags=["parameters", "hide-cell"]
# Stage parameters, lib.config.DistillParams: set any here as `name = value`, e.g. `seed = 7`; one left out,
# or None, takes params/<profile>/02_distill.yaml's value (`python -m lib.pipeline --help` lists them all). The
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
from IPython.display import display  # noqa: E402

import lib  # noqa: E402  (No module named 'lib': run from the project, or open the Colab link)
from lib import models, plots, training  # noqa: E402

params = lib.notebook_setup("distill", globals())  # the parameters cell over the profile's file

# %% [markdown]
# ## Run the stage
# `lib.distill.run` does the whole stage, the same function `python -m lib.distill` and `torchrun -m
# lib.distill` call: it tokenizes the corpus once into memory-mapped Arrow, builds the student, saves it as the
# undistilled baseline (`undistilled_name`), distils it into `run_dir/<run_name>` and writes
# `results/<profile>/distill-<run_name>.json`, then runs each ablation the same way.
#
# Checkpoints go to two slots, `run_dir/<run_name>/checkpoint-a` and `checkpoint-b`, alternately, each with a
# manifest of its files' checksums (`lib.checkpoints`), every `checkpoint_every` steps, at the end and on
# interruption. With `resume=True` a re-run verifies them and continues from the newest good one, refusing changed
# trajectory parameters (learning rate, loss weights, ...) unless `resume_with_changes=True`, in which case the new
# values hold from the checkpoint's step on and the results record each segment.

# %%
stage = lib.run_stage(params)  # lib.distill.run, through lib.config.STAGES
summary = stage.runs[params.run_name]
{k: v for k, v in summary.items() if k != "log"}

# %% [markdown]
# ## Teacher and student
# The student copies the teacher's embeddings (with `token_type_embeddings[0]` folded into the position
# embeddings, since DistilBERT has no segment embeddings), the chosen layers and the MLM head, tensor by tensor.

# %%
teacher_config, student_config = stage.teacher.config, stage.student.config
print(f"teacher: {teacher_config.num_hidden_layers} layers, "
      f"{models.count_parameters(stage.teacher) / 1e6:.2f}M parameters")
print(f"student: {student_config.n_layers} layers, {models.count_parameters(stage.student) / 1e6:.2f}M parameters, "
      f"{'random init' if params.random_init else 'from teacher layers ' + str(student_config.teacher_layers)}")
print(f"corpus: {len(stage.dataset):,} sequences, {sum(stage.dataset['length']):,} tokens")

# %% [markdown]
# ## Will it fit a 16 GB Colab T4?
# An estimate of this micro-batch's GPU memory in fp16 (`lib.training.estimate_memory`: weights, gradients, AdamW
# moments, activations and the vocabulary-sized logits, which dominate). The `t4` profile was sized with it.

# %%
memory = training.estimate_memory(teacher_config, student_config, params.batch_size, params.max_length, "fp16")
print(f"micro-batch {params.batch_size} x {params.max_length} tokens, fp16: {memory['total_gib']:.1f} GiB "
      f"estimated, {'fits' if memory['fits'] else 'does NOT fit'} a 16 GB T4 (90% usable)")
{k: round(v, 2) for k, v in memory["parts"].items()}

# %% [markdown]
# ## The losses

# %%
plots.show(plots.loss_curves(summary["log"]), caption=f"Distillation losses ({params.profile} profile)")

# %% [markdown]
# ## The undistilled baseline
# The same student, initialised from the same teacher layers but never distilled: fine-tuned next to the
# distilled one in the evaluation stages, it shows what distillation itself adds to the initialisation.

# %%
if stage.undistilled_dir:
    print(f"undistilled student saved to {stage.undistilled_dir}")
else:
    print("undistilled_name is not set: no undistilled baseline at this scale")

# %% [markdown]
# ## Ablations (the paper's Table 4)
# Each ablation is a full distillation run with one change (a loss weight set to 0, or a random
# initialisation drawn from `seed`) and the same budget, corpus, masking weights and teacher; the GLUE stage
# evaluates each. The columns are each run's last logged losses; a dash marks a term the run does not compute
# (its weight is 0).

# %%
if params.ablations:
    runs = pd.DataFrame.from_dict({name: {"change": str(params.ablations.get(name, "(triple loss)")), **run["final"],
                                          "tokens": run["tokens"], "wall time (s)": round(run["wall_time_s"])}
                                   for name, run in stage.runs.items()}, orient="index")
    display(runs.astype(object).where(runs.notna(), "\u2014"))
else:
    print("no ablations at this scale (set the ablations parameter)")

# %% [markdown]
# ## Held-out intrinsic measures
# Every model of the stage on the same `heldout_sequences` sequences, never trained on, with the same masks:
# masked-token accuracy, and KL(teacher || student) at temperature 1 per masked token (nats). Two reference points,
# neither a bound:
#
# - the **teacher** has KL 0 by definition: it is what the students imitate, not a ceiling on accuracy (a student
#   also trained on the masked tokens' labels, `L_mlm`, can predict them better than its teacher does);
# - the **undistilled** student (the copied teacher layers, before any training) is the starting point, not a
#   floor: copied from the teacher, it can start closer to the teacher's distribution (lower KL) than trained runs
#   end, because `L_mlm` pulls a student towards the labels and away from the teacher's distribution.
#
# `mlm-only` (no teacher signal) shows what the teacher adds. A dash: not trained here (no tokens seen).

# %%
if stage.heldout is not None:
    measured = {**(stage.heldout_reference or {}),
                **{name: run["heldout_curve"][-1] for name, run in stage.runs.items() if run["heldout_curve"]}}
    display(pd.DataFrame.from_dict({name: {"tokens seen": m.get("tokens") if m.get("tokens") is not None else "\u2014",
                                           "masked-token accuracy": m["mlm_accuracy"],
                                           "KL to teacher (nats)": m["kl_to_teacher"], "masked targets": m["n_tokens"]}
                                    for name, m in measured.items()}, orient="index"))
    curves = {name: run["heldout_curve"] for name, run in stage.runs.items() if run["heldout_curve"]}
    plots.show(plots.heldout_curves(curves, stage.heldout_reference),
               f"Held-out masked-token accuracy and KL to the teacher against tokens seen, every run of this stage "
               f"({params.profile} scale; one distillation seed per run). Error bars: +-2 binomial standard errors "
               "over the masked targets. Dashed: the teacher and the undistilled student, measured on the same masks.")
else:
    print("heldout_sequences is 0: no held-out measures at this scale")
