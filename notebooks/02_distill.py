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
# frequency smoothing (`lib.data`); training is resumable from checkpoints in `run_dir` (`lib.training`).

# %% tags=["parameters", "hide-cell"]
# None = the value from params/<profile>/02_distill.yaml; see lib/config.py:DistillParams for meanings.
profile = "smoke"
mirror = None
seed = None
run_dir = None
results_dir = None
run_name = None
teacher = None
student_layers = None
n_student_layers = None
random_init = None
corpus = None
max_length = None
min_length = None
alpha_ce = None
alpha_mlm = None
alpha_cos = None
alpha_mse = None
temperature = None
restrict_ce_to_mask = None
cos_layers = None
mlm_mask_prop = None
word_mask = None
word_keep = None
word_rand = None
mlm_smoothing = None
learning_rate = None
adam_betas = None
adam_epsilon = None
weight_decay = None
warmup_prop = None
n_epoch = None
max_steps = None
batch_size = None
gradient_accumulation_steps = None
max_grad_norm = None
precision = None
checkpoint_every = None
resume = None
log_every = None
_project_commit = None  # set by lib.pipeline: the commit a Colab run of this notebook clones

# %% tags=["hide-cell"]
# Setup: on Colab, clone and install this project at the commit that produced this notebook; everywhere, work
# from the project root.
import os, subprocess, sys  # noqa: E401
_HOME = "/content/distilbert-reproduced"
if "google.colab" in sys.modules and not os.path.isdir(_HOME):
    subprocess.run(["git", "clone", "-q", "https://github.com/distilbert-reproduced/distilbert-reproduced", _HOME], check=True)
    subprocess.run(["git", "-C", _HOME, "checkout", "-q", _project_commit or "main"])  # main if that commit is not pushed
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", f"{_HOME}/requirements.txt"], check=True)
for _root in (os.getcwd(), os.path.dirname(os.getcwd()), _HOME):
    if os.path.isdir(os.path.join(_root, "lib")):
        break
os.chdir(_root)
sys.path.insert(0, _root)

# %%
import time  # noqa: E402

import lib  # noqa: E402
from lib import config, data, hub, models, plots, results, training  # noqa: E402
from transformers import AutoTokenizer, set_seed  # noqa: E402

params = config.load_params("distill", globals())
lib.notebook_setup(params)
set_seed(params.seed)
config.as_dict(params)

# %% [markdown]
# ## Teacher and student
# The student copies the teacher's embeddings (with `token_type_embeddings[0]` folded into the position
# embeddings, since DistilBERT has no segment embeddings), the chosen layers and the MLM head, tensor by tensor.

# %%
started = time.perf_counter()
tokenizer = hub.from_pretrained(AutoTokenizer, params.teacher, params.mirror)
teacher, _ = models.load_teacher(hub.resolve(params.teacher, params.mirror))
params.check_teacher_depth(teacher.config.num_hidden_layers)
student = models.build_student(teacher, layers=params.student_layers, n_layers=params.n_student_layers,
                               random_init=params.random_init)
print(f"teacher: {teacher.config.num_hidden_layers} layers, {models.count_parameters(teacher) / 1e6:.2f}M parameters")
print(f"student: {student.config.n_layers} layers, {models.count_parameters(student) / 1e6:.2f}M parameters, "
      f"{'random init' if params.random_init else 'from teacher layers ' + str(student.config.teacher_layers)}")

# %% [markdown]
# ## Will it fit a 16 GB Colab T4?
# An estimate of this micro-batch's GPU memory in fp16 (`lib.training.estimate_memory`: weights, gradients, AdamW
# moments, activations and the vocabulary-sized logits, which dominate). The `t4` profile was sized with it.

# %%
memory = training.estimate_memory(teacher.config, student.config, params.batch_size, params.max_length, "fp16")
print(f"micro-batch {params.batch_size} x {params.max_length} tokens, fp16: {memory['total_gib']:.1f} GiB "
      f"estimated, {'fits' if memory['fits'] else 'does NOT fit'} a 16 GB T4 (90% usable)")
{k: round(v, 2) for k, v in memory["parts"].items()}

# %% [markdown]
# ## The corpus, tokenized once into memory-mapped Arrow

# %%
dataset = data.tokenize_corpus(data.read_corpus(params.corpus, params.mirror), tokenizer, params.max_length,
                               min_length=params.min_length, cache_dir=params.path("run_dir") / "corpus" / "distill")
print(f"{len(dataset):,} sequences, {sum(dataset['length']):,} tokens")

# %% [markdown]
# ## Train
# Checkpoints are written every `checkpoint_every` steps and on interruption; with `resume=True` a re-run
# continues from the last one.

# %%
summary = training.distill(teacher, student, dataset, params, output_dir=params.path("run_dir") / params.run_name,
                           tokenizer=tokenizer)
{k: v for k, v in summary.items() if k != "log"}

# %%
plots.show(plots.loss_curves(summary["log"]), caption=f"Distillation losses ({params.profile} profile)")

# %%
results.write_result(params, f"distill-{params.run_name}", {
    "teacher": params.teacher, "student_dir": summary["output_dir"],
    "teacher_parameters": models.count_parameters(teacher), "student_parameters": models.count_parameters(student),
    **{k: v for k, v in summary.items() if k not in ("log", "output_dir")},
}, time.perf_counter() - started)
