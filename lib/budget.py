"""T4-hours a profile needs, by FLOPs: (FLOPs per token x tokens) / (T4 fp16 peak x an assumed MFU).

FLOPs per token: 6 N for a trained model (forward 2 N, backward 4 N), 2 N for a forward pass (the teacher in
distillation, evaluation), N its parameter count; attention's own FLOPs are left out (under 10% at these lengths).
Tokens are upper bounds: every sequence counted at max_length (dynamic padding makes GLUE batches shorter).
Parameter counts: BERT-base's shapes (transformers' BertConfig defaults) counted as lib.training.estimate_memory
does; no torch or transformers import, so the book's reproduce page can call this at every build.
"""
from lib import config, tasks

T4_PEAK_FLOPS = 65e12  # NVIDIA T4 data sheet: fp16 tensor cores, dense
ASSUMED_MFU = 0.30     # a typical share of peak for BERT-size training in fp16 on a T4; make gpu-check measures it
# training / evaluation split sizes of the public datasets (examples; SQuAD: questions), from lib.tasks
TRAIN_SIZES = {name: task.train_size for name, task in tasks.TASKS.items()}
EVAL_SIZES = {name: task.eval_size for name, task in tasks.TASKS.items()}


BERT_BASE = dict(hidden=768, ffn=3072, layers=12, vocab=30522, positions=512, types=2)


def parameter_counts(n_student_layers=6):
    """(teacher, student) parameter counts of BERT-base (with its MLM head) and a DistilBERT student of
    n_student_layers (no pooler, no segment embeddings), as lib.training.estimate_memory counts them."""
    h, ffn, vocab, positions = BERT_BASE["hidden"], BERT_BASE["ffn"], BERT_BASE["vocab"], BERT_BASE["positions"]
    per_layer = 4 * h * h + 2 * h * ffn + 9 * h + ffn
    head = h * h + 3 * h + vocab

    def count(layers, types):
        return (vocab + positions + types) * h + 2 * h + layers * per_layer + head

    return count(BERT_BASE["layers"], BERT_BASE["types"]), count(n_student_layers, 0)


def hours(flops, mfu=ASSUMED_MFU, peak=T4_PEAK_FLOPS):
    return flops / (peak * mfu) / 3600


def _fine_tuning(params, tasks, n_teacher, n_student, max_length):
    """FLOPs of a fine-tuning sweep: every (model, task, seed), n_epoch passes over the (capped) training set at
    6 N and one pass over the (capped) evaluation set at 2 N."""
    n_models = {label: n_teacher if "bert-base" in str(path) and "distil" not in str(path) else n_student
                for label, path in params.models.items()}
    flops, examples = 0.0, 0
    for task in tasks:
        hp = {name: getattr(params, name) for name in ("n_epoch", "max_train_samples", "max_eval_samples")}
        hp.update(params.task_overrides.get(task, {}))  # as lib.finetune.task_hparams merges them
        n_train = min(TRAIN_SIZES[task], hp["max_train_samples"] or TRAIN_SIZES[task])
        n_eval = min(EVAL_SIZES[task], hp["max_eval_samples"] or EVAL_SIZES[task])
        tokens = max_length(task) * (n_train * hp["n_epoch"] * 6 + n_eval * 2)  # x N below
        flops += tokens * sum(n_models.values()) * len(params.seeds)
        examples += n_train
    return flops, dict(models=len(n_models), seeds=len(params.seeds), tasks=len(tasks), train_examples=examples)


def t4_budget(profile="t4", mfu=ASSUMED_MFU):
    """Rows {stage, work, flops, t4_hours} for a profile whose teacher is BERT-base, and the arithmetic of each."""
    distill = config.load_params(config.DISTILL, profile=profile)
    n_teacher, n_student = parameter_counts(distill.n_student_layers or 6)
    rows = []
    teacher = config.load_params(config.TEACHER, profile=profile)
    tokens = teacher.eval_sequences * teacher.max_length + teacher.adapt_steps * teacher.batch_size * teacher.max_length
    rows.append(dict(stage="1 teacher", flops=2 * n_teacher * tokens,
                     work=f"{teacher.eval_sequences:,} held-out sequences x {teacher.max_length} tokens, forward "
                          f"(2 x {n_teacher / 1e6:.1f}M FLOPs/token); MLM-head adaptation: {teacher.adapt_steps} steps"))
    if not distill.max_steps:
        raise ValueError(f"profile {profile!r}: the distillation budget is known only with max_steps set")
    per_step = distill.effective_batch_size or distill.batch_size * distill.gradient_accumulation_steps
    tokens = distill.max_steps * per_step * distill.max_length
    per_token = 6 * n_student + 2 * n_teacher
    rows.append(dict(stage="2 distill", flops=per_token * tokens,
                     work=f"{distill.max_steps:,} steps x {per_step} sequences x {distill.max_length} tokens = "
                          f"{tokens / 1e9:.2f}B tokens, x (6 x {n_student / 1e6:.1f}M student + 2 x "
                          f"{n_teacher / 1e6:.1f}M teacher) FLOPs/token"))
    glue = config.load_params(config.GLUE, profile=profile)
    flops, info = _fine_tuning(glue, glue.tasks, n_teacher, n_student,
                               lambda task: getattr(glue, tasks.TASKS[task].max_length_param))
    rows.append(dict(stage="3 GLUE", flops=flops,
                     work=f"{info['models']} models x {info['seeds']} seeds x {info['tasks']} tasks, "
                          f"{info['train_examples']:,} training examples per model and seed (after caps), "
                          f"{glue.max_length} tokens each, n_epoch x 6N + one evaluation pass x 2N"))
    downstream = config.load_params(config.IMDB_SQUAD, profile=profile)
    flops, info = _fine_tuning(downstream, tasks.stage_tasks(downstream), n_teacher, n_student,
                               lambda task: getattr(downstream, tasks.TASKS[task].max_length_param))
    rows.append(dict(stage="4 IMDb, SQuAD", flops=flops,
                     work=f"{info['models']} models x {info['seeds']} seeds: IMDb at {downstream.imdb_max_length} "
                          f"tokens, SQuAD at {downstream.squad_max_length} (one window per question)"))
    rows.append(dict(stage="5 latency", flops=0.0, work="timed on CPU, as in the paper: no GPU time"))
    for row in rows:
        row["t4_hours"] = hours(row["flops"], mfu)
    return rows
