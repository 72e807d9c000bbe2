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
# directory for stage 2.

# %% tags=["parameters", "hide-cell"]
# None = the value from params/<profile>/01_teacher.yaml; see lib/config.py:TeacherParams for meanings.
profile = "smoke"  # "t4" on a Colab GPU runtime; smoke, cpu, t4, paper: params/<profile>/
mirror = None
seed = None
run_dir = None
results_dir = None
teacher = None
corpus = None
max_length = None
heldout_fraction = None
eval_sequences = None
adapt_mlm = None
adapt_steps = None
adapt_top_layers = None
adapt_learning_rate = None
batch_size = None
precision = None
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
from lib import colab, config, data, hub, models, results, training  # noqa: E402
from transformers import AutoTokenizer, set_seed  # noqa: E402

params = config.load_params("teacher", colab.notebook_parameters("teacher", _params_given))
lib.notebook_setup(params)
set_seed(params.seed)
config.as_dict(params)

# %% [markdown]
# ## Load the teacher and the corpus
# Both ids resolve against the offline mirror when one is configured (`lib.hub`), else the hub.

# %%
started = time.perf_counter()
tokenizer = hub.from_pretrained(AutoTokenizer, params.teacher, params.mirror)
teacher, has_mlm_head = models.load_teacher(hub.resolve(params.teacher, params.mirror))
n_params = models.count_parameters(teacher)
print(f"teacher {params.teacher}: {teacher.config.num_hidden_layers} layers, hidden {teacher.config.hidden_size}, "
      f"{n_params / 1e6:.1f}M parameters, masked-LM head {'present' if has_mlm_head else 'MISSING'}")

sequences = data.tokenize_corpus(data.read_corpus(params.corpus, params.mirror), tokenizer, params.max_length,
                                 min_length=12, cache_dir=params.path("run_dir") / "corpus" / "teacher")
split = sequences.train_test_split(test_size=params.heldout_fraction, seed=params.seed)
train_set, heldout = split["train"], split["test"].select(range(min(params.eval_sequences, len(split["test"]))))
print(f"{len(train_set):,} training sequences, {len(heldout):,} held out")

# %% [markdown]
# ## Masked-LM sanity check, before and after adaptation

# %%
before = training.evaluate_mlm(teacher, heldout, tokenizer, batch_size=params.batch_size, seed=params.seed)
adapt = params.adapt_mlm == "always" or (params.adapt_mlm == "auto" and not has_mlm_head)
if adapt:
    adapt_log = training.train_mlm_head(teacher, train_set, tokenizer, steps=params.adapt_steps,
                                        top_layers=params.adapt_top_layers, learning_rate=params.adapt_learning_rate,
                                        batch_size=params.batch_size, seed=params.seed, precision=params.precision)
after = training.evaluate_mlm(teacher, heldout, tokenizer, batch_size=params.batch_size, seed=params.seed) if adapt else before
print(f"masked-token accuracy {before['mlm_accuracy']:.3f} -> {after['mlm_accuracy']:.3f}, "
      f"perplexity {before['perplexity']:.1f} -> {after['perplexity']:.1f}")

# %%
from transformers import pipeline  # noqa: E402
fill = pipeline("fill-mask", model=teacher, tokenizer=tokenizer, device=teacher.device)
examples = [tokenizer.decode(heldout[i]["input_ids"][1:13]) for i in range(3)]
for text in examples:
    words = text.split()
    words[len(words) // 2] = tokenizer.mask_token
    masked = " ".join(words)
    print(masked, "->", [(p["token_str"], round(p["score"], 3)) for p in fill(masked, top_k=3)])

# %% [markdown]
# The teacher's logits at one masked position, kept for the Background chapter's temperature figure.

# %%
import torch  # noqa: E402

ids = list(heldout[0]["input_ids"][:32])
position = len(ids) // 2
ids[position] = tokenizer.mask_token_id
with torch.no_grad():
    logits = teacher(input_ids=torch.tensor([ids], device=teacher.device)).logits[0, position].float().cpu()
top = torch.topk(logits, 10)
results.write_result(params, "teacher_logits", 0.0, text=tokenizer.decode(ids[1:]), position=position,
                     tokens=tokenizer.convert_ids_to_tokens(top.indices.tolist()), logits=top.values.tolist())

# %% [markdown]
# ## Save the (adapted) teacher and the result

# %%
teacher_dir = params.path("run_dir") / "teacher"
teacher.save_pretrained(teacher_dir)
tokenizer.save_pretrained(teacher_dir)
results.write_result(params, "teacher", time.perf_counter() - started, teacher=params.teacher,
                     saved_to=results.repo_relative(teacher_dir), parameters=n_params,
                     layers=teacher.config.num_hidden_layers, hidden_size=teacher.config.hidden_size,
                     had_mlm_head=has_mlm_head, adapted=adapt, heldout_sequences=len(heldout),
                     mlm_before=before, mlm_after=after)
