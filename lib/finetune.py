"""Downstream fine-tuning and evaluation: GLUE (Table 1), IMDb and SQuAD 1.1 (Table 2).

One fine-tuning run = (model, task, seed) -> a result dict, written by ``run_sweep`` as
``<results_dir>/<model label>/<task>-seed<seed>.json`` and skipped on the next sweep unless ``params.recompute``
or its ``run_key`` (the model's weights hash, a hash of the data rows and the run's settings) no longer matches:
a retrained model, changed data or a changed hyperparameter is fine-tuned again, never answered with a stale
result.
Every task is a lib.tasks.Task: its data, head and metric come from that spec. Training is the Hugging Face
Trainer; evaluation is on the dev sets (IMDb: test) with lib.metrics (the task's `evaluate` module).

Distillation during fine-tuning ("(D)"): the student's loss is alpha * task loss + (1 - alpha) * T^2 *
KL(teacher || student) on temperature-softened logits (start and end logits for SQuAD, averaged; MSE to the
teacher's prediction for the STS-B regression head). The teacher, already fine-tuned on the task, runs once
over the training features in eval mode (no dropout) before training -- the same numbers it would give batch
by batch -- and its logits travel with the features as ``teacher_*`` columns.

Over 400 lines because GLUE, IMDb and SQuAD share one Trainer set-up, one run_key and one sweep, and SQuAD's
windowing and answer post-processing belong with its fine-tuning.
"""
import contextlib
import hashlib
import inspect
import json
import math
import re
import time
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np

from lib import budget_rule, glue, hub, paper, preflight, tasks
from lib import metrics as M
from lib import results as results_io
from lib.checkpoints import hold_locks, signals_interrupt
from lib.config import TRAINING_SETTINGS, ParameterError


HPARAM_NAMES = (*TRAINING_SETTINGS, "max_train_samples", "max_eval_samples")


stage_tasks = tasks.stage_tasks  # the tasks a stage's parameters ask for


def task_hparams(task, params):
    """Hyperparameters for one task: the stage-wide values overridden by ``params.task_overrides[task]``."""
    overrides = dict(getattr(params, "task_overrides", {}) or {})
    for name, given in overrides.items():
        if name not in tasks.TASKS:
            raise ParameterError("task_overrides", f"unknown task {name!r}; tasks: {list(tasks.TASKS)}")
        if not isinstance(given, dict) or set(given) - set(HPARAM_NAMES):
            raise ParameterError("task_overrides", f"{name}: expected a dict of {HPARAM_NAMES}, got {given!r}")
    hp = {name: getattr(params, name) for name in HPARAM_NAMES}
    hp.update(overrides.get(task, {}))
    if not 0 <= hp["warmup_prop"] < 1:
        raise ParameterError("warmup_prop", f"must be in [0, 1), got {hp['warmup_prop']} (task {task})")
    return hp


def _spec(task):
    """The registered task (lib.tasks), or a ParameterError naming the registered ones."""
    if task not in tasks.TASKS:
        raise ParameterError("tasks", f"unknown task {task!r}; tasks: {list(tasks.TASKS)}")
    return tasks.TASKS[task]


def dataset_id(spec, params):
    """The dataset a task loads: its stage parameter's copy (glue_dataset = smoke/glue, ...) when it names one,
    else its own hub id."""
    if spec.dataset_param is None:
        return spec.dataset
    if not hasattr(params, spec.dataset_param):
        raise ParameterError("tasks", f"task {spec.name!r} needs the parameter {spec.dataset_param!r}, which "
                                      f"{type(params).__name__} lacks")
    return getattr(params, spec.dataset_param)


def load_task(task, params):
    """The task's train split and evaluation splits, through the hub or the mirror, as a DatasetDict.

    max_train_samples / max_eval_samples (per task via task_overrides) keep a fixed random subset drawn with
    params.seed, in the original order: every model and fine-tuning seed sees the same examples (a plain head
    would be biased: IMDb's train split is sorted by label). With heldout_rows, a "heldout" split of train rows
    that never train joins them, and the training subset is drawn from the rest (lib.budget_rule.split_train).
    """
    import datasets
    spec = _spec(task)
    repo_id = dataset_id(spec, params)
    try:
        data = hub.load_dataset(repo_id, spec.config, mirror=params.mirror)
    except hub.ConfigNotFoundError as err:  # e.g. a GLUE task the mirror lacks
        raise ParameterError("tasks", f"task {task!r} cannot be loaded from {spec.dataset_param} = {repo_id!r}: {err}") from None
    hp = task_hparams(task, params)
    caps = {"train": hp["max_train_samples"], **{split: hp["max_eval_samples"] for split in spec.eval_splits}}
    for split in caps:
        if split not in data:
            raise KeyError(f"{repo_id} ({spec.config}) has no split {split!r}; it has {list(data)}")
    heldout_rows = getattr(params, "heldout_rows", 0)
    splits, heldout = {}, {}
    for split, cap in caps.items():
        if split == "train" and heldout_rows:  # the budget rule's rows: out of the train split, never trained on
            splits[split], heldout[budget_rule.HELDOUT] = budget_rule.split_train(data[split], heldout_rows, cap,
                                                                                   params.seed)
        else:
            splits[split] = subset(data[split], cap, params.seed)
    return datasets.DatasetDict({**splits, **heldout})  # the held-out split last, as data_fingerprint reads them


def subset(dataset, n, seed):
    """A fixed random subset of ``n`` rows drawn with ``seed``, in the dataset's order (all of it when ``n`` is
    None or not smaller): the same rows on every machine, unbiased where a split is sorted (IMDb, by label)."""
    if n is None or n >= len(dataset):
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False))
    return dataset.select(keep)


# --- model inputs and precision ---

def model_inputs(model):
    """Input columns the model's forward accepts: DistilBERT takes no token_type_ids, BERT does."""
    accepted = inspect.signature(model.forward).parameters
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in accepted]


def precision_flags(precision):
    """(resolved precision, TrainingArguments flags), by lib.training.select_precision's rule: auto is bf16 on
    CUDA compute capability >= 8, fp16 (the Trainer then scales the loss) below, fp32 on CPU."""
    import torch
    from lib.training import select_precision
    cuda = torch.cuda.is_available()
    dtype, _ = select_precision(precision, "cuda" if cuda else "cpu")
    precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return precision, {"fp16": precision == "fp16", "bf16": precision == "bf16", "use_cpu": not cuda}


def _training_args(output_dir, seed, hp, params, **extra):
    from transformers import TrainingArguments
    _, flags = precision_flags(params.precision)
    return one_device_per_process(TrainingArguments(
        output_dir=str(output_dir), seed=seed, data_seed=seed,
        learning_rate=hp["learning_rate"], num_train_epochs=hp["n_epoch"], weight_decay=hp["weight_decay"],
        per_device_train_batch_size=hp["batch_size"], per_device_eval_batch_size=2 * hp["batch_size"],
        warmup_steps=float(hp["warmup_prop"]),  # a float in [0, 1) is a fraction of the total steps
        lr_scheduler_type="linear", eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
        remove_unused_columns=False,  # we choose the columns: teacher logits must reach compute_loss
        dataloader_num_workers=0,
        disable_tqdm=True,  # the sweep shows one bar over runs; per-run bars would flood the executed notebooks
        **flags, **extra))


def one_device_per_process(args):
    """Fine-tune on one device per process. A Trainer whose process sees several GPUs (``args.n_gpu > 1``, only
    without a distributed launcher) wraps the model in torch.nn.DataParallel, which multiplies the batch per
    optimizer step and so changes the result; here it keeps to the first GPU instead, and says so. Several GPUs
    are used by launching one process per GPU (torchrun / accelerate launch), where n_gpu is 1 per process."""
    import warnings
    if args.n_gpu > 1:
        warnings.warn(f"this process sees {args.n_gpu} GPUs: fine-tuning uses one ({args.device}), not "
                      "DataParallel over all of them (which would multiply the batch); to use them all, launch one "
                      "process per GPU with torchrun or accelerate launch", stacklevel=2)
        args._n_gpu = 1  # what transformers' Trainer itself does to keep a model-parallel model out of DataParallel
    return args


def _make_trainer(model, args, train_dataset, collator, tokenizer, distill):
    from transformers import Trainer

    class DistillTrainer(Trainer):
        loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            teacher = {k[len("teacher_"):]: inputs.pop(k) for k in list(inputs) if k.startswith("teacher_")}
            outputs = model(**inputs)
            loss = outputs.loss
            if teacher:
                regression = model.config.problem_type == "regression"
                soft = sum(soft_loss(outputs[name], t, distill["temperature"], regression)
                           for name, t in teacher.items()) / len(teacher)
                loss = distill["alpha"] * loss + (1 - distill["alpha"]) * soft
            return (loss, outputs) if return_outputs else loss

    from transformers.trainer_callback import PrinterCallback
    cls = DistillTrainer if distill else Trainer
    trainer = cls(model=model, args=args, train_dataset=train_dataset, data_collator=collator,
                  processing_class=tokenizer)
    # with disable_tqdm, Trainer prints every log dict instead ({'loss': ...}, {'train_runtime': ...}): hundreds
    # of lines per sweep in the executed notebooks; the result records the training loss and time itself
    trainer.remove_callback(PrinterCallback)
    return trainer


def soft_loss(student_logits, teacher_logits, temperature, regression=False):
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the batch (float32); MSE for regression."""
    import torch.nn.functional as F
    s, t = student_logits.float(), teacher_logits.float()
    if regression:
        return F.mse_loss(s, t)
    return F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1),
                    reduction="batchmean") * temperature ** 2


def _predict(model, dataset, output_dir, hp, params, collator, tokenizer):
    """Logits over a dataset (in order) with the Trainer's device and precision handling."""
    args = _training_args(output_dir, 0, hp, params)
    return _make_trainer(model, args, None, collator, tokenizer, None).predict(dataset).predictions


def _with_logits(dataset, name, logits):
    # straight from numpy to an Arrow column: SQuAD's 88k x 384 logits as Python floats would take gigabytes
    import pyarrow as pa
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    return dataset.add_column(name, pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), logits.shape[1]))


def check_tokenizer_files(model_path, mirror=None):
    """Refuse a local model folder without a tokenizer vocabulary (a hub id not held locally is left to the hub).
    transformers 5 loads such a folder anyway: it builds the config's tokenizer class with an empty vocabulary, so
    every word became [UNK] and the model was fine-tuned on nothing, with no warning (SST-2 35.9 instead of 100)."""
    local = Path(hub.resolve(str(model_path), mirror))
    if local.is_dir() and not hub.has_tokenizer_vocabulary(local):
        raise FileNotFoundError(
            f"model folder {local} has no tokenizer files (none of {', '.join(hub.TOKENIZER_VOCABULARIES)}); "
            "transformers would build an empty vocabulary that reads every word as [UNK]. Copy the tokenizer files "
            "of the model it came from into it (tokenizer.save_pretrained), or name that model instead")


def load_tokenizer(model_path, mirror=None):
    """The tokenizer of a model folder or hub id, refused when it could only read [UNK] (check_tokenizer_files)."""
    from transformers import AutoTokenizer
    check_tokenizer_files(model_path, mirror)
    tokenizer = hub.from_pretrained(AutoTokenizer, model_path, mirror=mirror)
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):  # e.g. a hub copy without its tokenizer files
        raise ValueError(f"the tokenizer of {model_path!r} holds only its special tokens: every word would read as "
                         "[UNK]; give the model its tokenizer files")
    return tokenizer


def _teacher(cls, teacher_path, tokenizer, params, param_name, **kwargs):
    teacher = hub.from_pretrained(cls, teacher_path, mirror=params.mirror, **kwargs)
    teacher_tokenizer = load_tokenizer(teacher_path, params.mirror)
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():  # logits are compared on the student's tokens
        raise ParameterError(param_name, f"teacher {teacher_path!r} does not share the student's vocabulary")
    return teacher


# --- classification: GLUE and IMDb ---

def encode_classification(data, task, tokenizer, max_length, truncation="head"):
    """Tokenize a task's DatasetDict: model inputs (token_type_ids always, dropped later per model) + labels.

    truncation 'head' keeps the first max_length tokens; 'head+tail' (long single texts, IMDb) keeps the first
    quarter of the budget and the end of the text (Sun et al. 2019: 128 + 382 tokens for 512).
    """
    spec = _spec(task)
    if truncation not in ("head", "head+tail"):
        raise ParameterError("imdb_truncation", f"{truncation!r} is not one of head, head+tail")

    def encode(batch):
        texts = [batch[c] for c in spec.text]
        if truncation == "head+tail":
            texts = [[_head_tail(tokenizer, text, max_length) for text in texts[0]]] + texts[1:]
        enc = tokenizer(*texts, truncation=True, max_length=max_length, return_token_type_ids=True)
        enc["labels"] = [float(x) for x in batch["label"]] if spec.regression else batch["label"]
        return enc

    return data.map(encode, batched=True, remove_columns=next(iter(data.values())).column_names,
                    desc=f"tokenizing {task}")


def _head_tail(tokenizer, text, max_length):
    # cut the text at token boundaries (character offsets), so any fast tokenizer works
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= budget:
        return text
    head = max(1, budget * 128 // 510)
    tail = budget - head
    return text[:offsets[head - 1][1]] + " " + text[offsets[len(offsets) - tail][0]:]


# --- tokenize once per (task, tokenizer): reused across seeds and models that share a tokenizer ---

_ENCODED = OrderedDict()  # key -> tokenized DatasetDict, most recently used last
ENCODED_CACHE_SIZE = 8  # a sweep runs task by task, so a few entries hold every hit


def tokenizer_fingerprint(tokenizer):
    """sha256 (16 hex digits) of what decides how ``tokenizer`` reads text: its fast tokenizer's serialised
    pipeline (vocabulary, normaliser, pre-tokeniser, special-token template) and the settings outside it. Two
    model folders with the same tokenizer files (a teacher and its students) get the same value. None for a
    tokenizer without a serialised form: such a tokenizer is never cached."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    outside = [type(tokenizer).__name__, tokenizer.padding_side, tokenizer.truncation_side,
               tokenizer.model_max_length, sorted(tokenizer.all_special_tokens)]
    digest = hashlib.sha256(backend.to_str().encode())
    digest.update(json.dumps(outside, default=str).encode())
    return digest.hexdigest()[:16]


def cached_encoding(kind, data, tokenizer, settings, encode):
    """``encode()`` (tokenized splits of ``data``) computed once per process for the same rows (data_fingerprint),
    tokenizer (tokenizer_fingerprint), ``kind`` (the task, or SQuAD's train/dev windows) and ``settings``
    (max_length, truncation, stride, ...); later calls reuse it. Every seed and every model sharing a tokenizer
    then skips tokenizing, the largest part of a run's fixed cost. Reuse is safe: callers only derive new datasets
    from it (select_columns, add_column), never change it."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return encode()
    key = (kind, data_fingerprint(data), fingerprint, json.dumps(settings, sort_keys=True, default=str))
    if key not in _ENCODED:
        _ENCODED[key] = encode()
        while len(_ENCODED) > ENCODED_CACHE_SIZE:
            _ENCODED.popitem(last=False)
    _ENCODED.move_to_end(key)
    return _ENCODED[key]


def finetune_classification(model_path, task, seed, params, output_dir, teacher_path=None, save_dir=None):
    """Fine-tune ``model_path`` on a GLUE task or IMDb with one seed; evaluate on the dev/test split(s).

    teacher_path: a model already fine-tuned on this task; the student then learns from its logits too
    (GlueParams.task_alpha, temperature). save_dir: keep the fine-tuned model there (to teach others later).
    Returns the result dict (metrics in percent, 'score' = the task's single number, see lib.metrics).
    """
    import transformers
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding
    from lib import models
    spec = _spec(task)
    if spec.head == tasks.QA:
        raise ParameterError("tasks", f"{task!r} is not a classification task")
    hp = task_hparams(task, params)
    data = load_task(task, params)
    tokenizer = load_tokenizer(model_path, params.mirror)
    max_length = getattr(params, spec.max_length_param)
    truncation = getattr(params, spec.truncation_param) if spec.truncation_param else "head"
    encoded = cached_encoding(task, data, tokenizer, {"max_length": max_length, "truncation": truncation},
                              lambda: encode_classification(data, task, tokenizer, max_length, truncation))

    transformers.set_seed(seed)  # the new classification head's initialisation depends on the seed
    head = head_config(task, data["train"])
    model = hub.from_pretrained(AutoModelForSequenceClassification, model_path, mirror=params.mirror, **head)
    models.set_torch_threads(model)  # one thread for tiny models: robust on a busy machine
    inputs = model_inputs(model)
    collator = DataCollatorWithPadding(tokenizer)
    train = encoded["train"]
    distill = None
    if teacher_path is not None:
        teacher = _teacher(AutoModelForSequenceClassification, teacher_path, tokenizer, params, "distill_teacher", **head)
        logits = _predict(teacher, train.select_columns(model_inputs(teacher)), output_dir, hp, params, collator, tokenizer)
        train = _with_logits(train, "teacher_logits", logits)
        distill = {"alpha": params.task_alpha, "temperature": params.temperature}
        del teacher
    train = train.select_columns(inputs + ["labels"] + (["teacher_logits"] if distill else []))

    grouped = group_by_length(params)
    sampling = {"train_sampling_strategy": "group_by_length"} if grouped else {}
    trainer = _make_trainer(model, _training_args(output_dir, seed, hp, params, **sampling), train, collator,
                            tokenizer, distill)
    started = time.time()
    train_out = trainer.train()
    train_seconds = time.time() - started
    in_dataset_order(trainer)

    by_split, summaries = {}, {}
    scored = list(spec.eval_splits) + ([budget_rule.HELDOUT] if budget_rule.HELDOUT in encoded else [])
    for split in scored:
        def score(preds, labels, split=split):
            return M.task_metrics(task, preds, labels, split=split, mirror=params.mirror)
        labels = np.asarray(encoded[split]["labels"])
        preds = _predicted(spec, trainer.predict(encoded[split].select_columns(inputs)).predictions)
        by_split[split] = score(preds, labels)
        summaries[split] = _prediction_summary(preds, labels, spec.regression)
        if split == budget_rule.HELDOUT:  # the budget rule's measure, beside its constant-answer floor
            summaries[split]["floor"] = budget_rule.constant_floor(task, labels, lambda p, y: score(p, y)["score"])
    primary, *others = spec.eval_splits
    result_metrics = dict(by_split[primary])
    for split in others:  # MNLI: accuracy_mismatched beside the matched accuracy (the task's score)
        suffix = split.replace("validation_", "")
        result_metrics.update({f"{k}_{suffix}": v for k, v in by_split[split].items() if k != "score"})
    if save_dir is not None:
        trainer.save_model(str(save_dir))
    result = _result(task, model_path, seed, teacher_path, result_metrics, by_split, summaries, len(train),
                     train_out, train_seconds, hp, params, max_length=max_length, truncation=truncation,
                     **({"group_by_length": True} if grouped else {}))
    first = summaries[primary]  # the split whose score is the task's
    return {**result, "single_class": first["single_class"], "majority_rate": first.get("majority_rate")}


def _predicted(spec, logits):
    return logits.reshape(-1) if spec.regression else logits.argmax(-1)


def in_dataset_order(trainer):
    """Predict in the datasets' own order from here on. transformers 5's Trainer draws its evaluation batches with
    the training's sampling strategy too: length-grouped, shuffled, so that predict() returns its rows in another
    order than the labels' and every score is a chance one (the first cpu run of issue 23 scored SST-2 50 % after
    learning its training set)."""
    trainer.args.train_sampling_strategy = "sequential"
    return trainer


def group_by_length(params):
    """Whether classification batches are drawn length-grouped (the Trainer's LengthGroupedSampler: rows of similar
    length share a batch, so dynamic padding pads less: SST-2 on MiniLM went from 62 % to 12 % padding and 1.7x the
    tokens/s, benchmarks/finetune_throughput.py). The stage parameter group_by_length, off by default: it changes
    which rows share a batch and so the scores. It is in the run_key."""
    return bool(getattr(params, "group_by_length", False))


def head_config(task, train):
    """from_pretrained keywords for a task's head: its size, problem type and label names (id2label / label2id,
    so that a saved model says which class is which): the train split's ClassLabel names; regression (STS-B)
    has one output, named 'score'."""
    import datasets
    spec = _spec(task)
    if spec.regression:
        names = ["score"]
    else:
        feature = train.features["label"]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        if names is not None and len(names) != spec.num_labels:
            raise ValueError(f"task {task!r} has {spec.num_labels} classes, but its dataset's label feature "
                             f"names {len(names)}: {names}")
    head = dict(num_labels=spec.num_labels,
                problem_type="regression" if spec.regression else "single_label_classification")
    if names is not None:  # plain integer labels (no names) keep transformers' LABEL_<i>
        head.update(id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)})
    return head


def _prediction_summary(preds, labels, regression):
    """What a model predicted on one evaluation split, beside the split's own label distribution. single_class:
    one class for every example (regression: one value), a model that learned no more than a constant answer.
    majority_rate: the accuracy (percent) of always answering the split's most frequent label."""
    if regression:
        return {"n": int(len(preds)), "mean": float(np.mean(preds)), "std": float(np.std(preds)),
                "min": float(np.min(preds)), "max": float(np.max(preds)), "single_class": bool(np.ptp(preds) == 0)}
    classes, counts = np.unique(preds, return_counts=True)
    gold, gold_counts = np.unique(labels, return_counts=True)
    return {"n": int(len(preds)), "predicted_label_counts": {str(int(k)): int(c) for k, c in zip(classes, counts)},
            "single_class": len(classes) == 1, "majority_label": int(gold[np.argmax(gold_counts)]),
            "majority_rate": 100.0 * float(gold_counts.max()) / len(labels)}


def _result(task, model_path, seed, teacher_path, result_metrics, by_split, summaries, n_train, train_out,
            train_seconds, hp, params, **settings):
    precision, _ = precision_flags(params.precision)
    return {
        "task": task, "model_path": str(model_path), "seed": seed, "teacher_path": teacher_path,
        "metrics": result_metrics, "score": result_metrics["score"], "metrics_by_split": by_split,
        "predictions": summaries,
        "train": {"features": n_train, "steps": int(train_out.global_step), "loss": float(train_out.training_loss),
                  "seconds": round(train_seconds, 1)},
        "hparams": {**hp, **settings, "precision": precision},  # the stage parameters are in the provenance
    }


# --- SQuAD 1.1 ---

def squad_features(examples, tokenizer, max_length=384, doc_stride=128, training=True):
    """Tokenize a batch of SQuAD examples (dict of lists) into overlapping windows over the context.

    Each window is [CLS] question [SEP] context piece [SEP], padded to max_length; consecutive windows share
    doc_stride tokens (the tokenizer's stride). Training: start/end token positions of the first answer, or
    the [CLS] position (0) when the answer is not wholly inside the window. Evaluation: example_id and the
    offset mapping, with None outside the context so post-processing only picks context spans.
    """
    if tokenizer.padding_side != "right":
        raise ValueError("squad_features expects a tokenizer that pads on the right (question first)")
    enc = tokenizer([q.lstrip() for q in examples["question"]], examples["context"], truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length", return_token_type_ids=True)
    window_to_example = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    if training:
        enc["start_positions"], enc["end_positions"] = [], []
    else:
        enc["example_id"], enc["offset_mapping"] = [], []
    for i, example in enumerate(window_to_example):
        sequence_ids = enc.sequence_ids(i)
        if not training:
            enc["example_id"].append(examples["id"][example])
            enc["offset_mapping"].append([o if s == 1 else None for o, s in zip(offsets[i], sequence_ids)])
            continue
        answers = examples["answers"][example]
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        context_start = sequence_ids.index(1)
        context_end = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
        if offsets[i][context_start][0] > start_char or offsets[i][context_end][1] < end_char:
            start = end = 0  # answer not (wholly) in this window: point at [CLS]
        else:
            start = context_start
            while start <= context_end and offsets[i][start][0] <= start_char:
                start += 1
            end = context_end
            while end >= context_start and offsets[i][end][1] >= end_char:
                end -= 1
            start, end = start - 1, end + 1
        enc["start_positions"].append(start)
        enc["end_positions"].append(end)
    return enc


def squad_postprocess(examples, features, start_logits, end_logits, n_best=20, max_answer_length=30):
    """Answer text per example id: over all windows of an example, the context span (start <= end, at most
    max_answer_length tokens) maximising start + end logit among the n_best starts and n_best ends.

    examples: columns id, context; features: columns example_id, offset_mapping (from squad_features with
    training=False), in the same order as the logit rows.
    """
    from tqdm.auto import tqdm
    windows = defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        windows[example_id].append(i)
    all_offsets = list(features["offset_mapping"])  # one read, not one per window
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    predictions = {}
    ids, contexts = examples["id"], examples["context"]
    for example_id, context in tqdm(zip(ids, contexts), total=len(ids), desc="squad answers",
                                    disable=len(ids) < 1000, leave=False):
        best_score, best_text = -math.inf, ""
        for i in windows[example_id]:
            offsets = all_offsets[i]
            top_starts = np.argsort(start_logits[i])[::-1][:n_best]
            top_ends = np.argsort(end_logits[i])[::-1][:n_best]
            for s in top_starts:
                for e in top_ends:
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = start_logits[i][s] + end_logits[i][e]
                    if score > best_score:
                        best_score, best_text = score, context[offsets[s][0]:offsets[e][1]]
        predictions[example_id] = best_text
    return predictions


def squad_windows(data, window):
    """{split: windows} of a SQuAD DatasetDict: train windows with answer positions; the evaluation splits'
    (validation, and the budget rule's held-out questions when there are some) with example ids and offsets."""
    return {split: rows.map(squad_features, batched=True, fn_kwargs=dict(training=split == "train", **window),
                            remove_columns=rows.column_names, desc=f"squad {split} windows")
            for split, rows in data.items()}


def _squad_answers(trainer, examples, windows, inputs, params):
    """{question id: answer text} of the fine-tuned model over one evaluation split's windows."""
    start, end = trainer.predict(windows.select_columns(inputs)).predictions
    return squad_postprocess(examples, windows, start, end, params.n_best, params.max_answer_length)


def _references(examples):
    return {q: a["text"] for q, a in zip(examples["id"], examples["answers"])}


def finetune_squad(model_path, seed, params, output_dir, teacher_path=None, save_dir=None, task=tasks.SQUAD):
    """Fine-tune ``model_path`` on SQuAD 1.1 (or another extractive QA ``task`` in its schema) with one seed;
    EM/F1 on the dev set (its metric module: official v1.1 scoring).

    teacher_path: a model already fine-tuned on SQuAD (the paper's DistilBERT (D)): loss = squad_alpha * CE +
    (1 - squad_alpha) * T^2 * KL on start and end logits (averaged). save_dir: keep the fine-tuned model.
    """
    import transformers
    from transformers import AutoModelForQuestionAnswering, default_data_collator
    from lib import models
    hp = task_hparams(task, params)
    data = load_task(task, params)
    tokenizer = load_tokenizer(model_path, params.mirror)
    window = dict(tokenizer=tokenizer, max_length=params.squad_max_length, doc_stride=params.doc_stride)
    settings = {"max_length": params.squad_max_length, "doc_stride": params.doc_stride}
    windows = cached_encoding(task, data, tokenizer, settings, lambda: squad_windows(data, window))
    train = windows["train"]
    transformers.set_seed(seed)
    model = hub.from_pretrained(AutoModelForQuestionAnswering, model_path, mirror=params.mirror)
    models.set_torch_threads(model)  # one thread for tiny models: robust on a busy machine
    inputs = model_inputs(model)
    distill = None
    if teacher_path is not None:
        teacher = _teacher(AutoModelForQuestionAnswering, teacher_path, tokenizer, params, "squad_teacher")
        start, end = _predict(teacher, train.select_columns(model_inputs(teacher)), output_dir, hp, params,
                              default_data_collator, tokenizer)
        train = _with_logits(_with_logits(train, "teacher_start_logits", start), "teacher_end_logits", end)
        distill = {"alpha": params.squad_alpha, "temperature": params.temperature}
        del teacher
    columns = inputs + ["start_positions", "end_positions"]
    train = train.select_columns(columns + (["teacher_start_logits", "teacher_end_logits"] if distill else []))

    trainer = _make_trainer(model, _training_args(output_dir, seed, hp, params), train, default_data_collator,
                            tokenizer, distill)
    started = time.time()
    train_out = trainer.train()
    train_seconds = time.time() - started

    by_split, summaries = {}, {}
    for split in [s for s in windows if s != "train"]:  # validation, and the budget rule's held-out questions
        answers = _squad_answers(trainer, data[split], windows[split], inputs, params)
        by_split[split] = M.qa_metrics(task, answers, _references(data[split]), mirror=params.mirror)  # 'score': F1
        summaries[split] = {"n": len(answers), "empty": sum(1 for a in answers.values() if not a),
                            "mean_answer_words": float(np.mean([len(a.split()) for a in answers.values()]))
                            if answers else 0.0}
        if split == "validation":
            dev_answers = answers
    scores = by_split["validation"]
    if save_dir is not None:
        trainer.save_model(str(save_dir))
    result = _result(task, model_path, seed, teacher_path, scores, by_split, summaries,
                     len(train), train_out, train_seconds, hp, params, max_length=params.squad_max_length,
                     doc_stride=params.doc_stride, n_best=params.n_best, max_answer_length=params.max_answer_length)
    # answers: {question id: text}, the official script's input; _write_run saves it as the predictions_file
    return {**result, "single_class": None, "majority_rate": None, "answers": dev_answers}  # spans, not classes


# --- sweeps ---

def _slug(label):
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(label)).strip("-") or "model"


def result_path(results_dir, label, task, seed):
    return Path(results_dir) / _slug(label) / f"{task}-seed{seed}.json"


def _is_qa(task):
    return _spec(task).head == tasks.QA


def _distills(task, params):
    """Whether (D) runs are added for ``task``: squad_distill for QA, task_distill (GlueParams) for the others."""
    return bool(getattr(params, "squad_distill" if _is_qa(task) else "task_distill", False))


def _finetune(task, model_path, seed, params, work_dir, teacher_path=None, save_dir=None):
    with young_heap():
        if _is_qa(task):
            return finetune_squad(model_path, seed, params, work_dir, teacher_path, save_dir, task=task)
        return finetune_classification(model_path, task, seed, params, work_dir, teacher_path, save_dir)


fine_tunings = 0  # fine-tunings run by this process (not read back from a results file): whether a call did any
read_back = {}  # run key -> recorded wall_time_s of the finished runs a stage read back instead of running (run)


def _counted(*args, **kwargs):
    """_finetune, counted in fine_tunings, its result given the seconds it took (wall_time_s, evaluation included)."""
    global fine_tunings
    fine_tunings += 1
    started = time.perf_counter()
    result = _finetune(*args, **kwargs)
    return {**result, "wall_time_s": round(time.perf_counter() - started, 1)}


def _reused(record, path):
    """A finished run's record, read back instead of run: its seconds go into read_back, once per run however many
    files hold it (the budget rule's run at the chosen rung is also the sweep's)."""
    key = json.dumps(record.run_key, sort_keys=True) if record.run_key else str(path)
    read_back[key] = record.wall_time_s or 0.0  # records written before wall_time_s was kept: 0
    return record


_young_depth = 0  # young_heap calls open in this process: only the outermost freezes and thaws


@contextlib.contextmanager
def young_heap():
    """Run one fine-tuning with the objects that existed before it frozen out of Python's garbage collector.

    Trainer.train starts with accelerate's free_memory(), a full gc.collect() that walks every object of the
    process: about 1.7 s per run in a notebook kernel's heap, for nothing, since a run's garbage is its own
    (the previous run's was collected when it ended, below). Frozen (gc.freeze) older objects are not walked, so
    that collection costs only what the run created. On the way out, a collection of the run's objects only (its
    Trainer, model and optimizer hold reference cycles, so reference counting alone does not free them), then
    everything is thawed as it was. Memory and results are unchanged: only what the collector walks is."""
    import gc
    global _young_depth
    if _young_depth:
        yield
        return
    _young_depth += 1
    gc.freeze()
    try:
        yield
    finally:
        _young_depth -= 1
        gc.collect()  # the run's garbage, still young
        gc.unfreeze()


def run_sweep(models, tasks, seeds, params, results_dir, provenance=None, with_budget=False):
    """Fine-tune every (model, task, seed); return their result dicts. A finished result (its JSON exists) is
    loaded, not recomputed, unless params.recompute: an interrupted sweep resumes where it stopped.

    models: label -> model id or path. When distillation is on for a task (GlueParams.task_distill,
    ImdbSquadParams.squad_distill), every model but params.distill_teacher is also fine-tuned with the teacher's
    fine-tuned copy (first seed; or squad_teacher for SQuAD when given) as label "<label> (D)".
    provenance: dict stored in each result (default: lib.results.provenance(params)).
    With a budget_ladder, the budget rule chooses the laddered tasks' training budgets first (apply_budget_rule);
    with_budget: return (results, the rule's record) instead of the results alone.
    """
    import datasets
    if not models:
        raise ParameterError("models", "name at least one model")
    if not seeds:
        raise ParameterError("seeds", "give at least one seed")
    for task in tasks:
        _spec(task)
    teacher_label = params.distill_teacher
    labels = sorted(models, key=lambda label: label != teacher_label)  # teacher first: it teaches the (D) runs
    jobs = [(label, models[label], task, seed, False) for task in tasks for label in labels for seed in seeds]
    jobs += [(f"{label} (D)", models[label], task, seed, True)
             for task in tasks if _distills(task, params) for label in labels if label != teacher_label for seed in seeds]
    provenance = provenance if provenance is not None else results_io.provenance(params)
    run_dir = params.path("run_dir")
    results = []
    datasets.disable_progress_bars()  # one bar over the runs; per-run tokenization bars would bury it
    try:
        fingerprints = {}  # model -> model_fingerprint: each model folder hashed once per sweep
        params, budget = apply_budget_rule(models, tasks, seeds[0], params, results_dir, provenance, fingerprints)
        _sweep(jobs, seeds, models, params, results_dir, provenance, run_dir, results, fingerprints)
    finally:
        datasets.enable_progress_bars()
    return (results, budget) if with_budget else results


def budget_path(results_dir, label, task, max_train_samples, seed):
    """Where a budget-ladder run's record lies: <model>/budget/<task>-n<examples>-seed<n>.json, beside (not among)
    the model's runs."""
    return Path(results_dir) / _slug(label) / results_io.BUDGET / f"{task}-n{max_train_samples}-seed{seed}.json"


def apply_budget_rule(models, tasks, seed, params, results_dir, provenance, fingerprints=None):
    """(``params`` with each laddered task's max_train_samples set to its chosen rung, the rule's record
    {task: {rungs, chosen, passed, ...}} or None without a ladder). The teacher is fine-tuned with ``seed`` at each rung
    of budget_ladder[task] in turn (a record finished with the same run_key is reused) and scored on the held-out
    train rows; the first rung whose score reaches lib.budget_rule.target is chosen, else the last (passed: false).
    fingerprints: a model -> model_fingerprint cache shared with the sweep."""
    ladder = {task: rungs for task, rungs in (getattr(params, "budget_ladder", None) or {}).items() if task in tasks}
    if not ladder:
        return params, None
    if paper.TEACHER not in models:
        raise ParameterError("budget_ladder", f"the rule fine-tunes the model labelled {paper.TEACHER!r}; models has "
                                              f"{list(models)}")
    model_path = models[paper.TEACHER]
    fingerprint = _fingerprint(model_path, params.mirror, {} if fingerprints is None else fingerprints)
    record = {}
    for task, rungs in ladder.items():
        measured = []
        for rung in rungs:
            rung_params = budget_rule.with_budget(params, task, rung)
            path = budget_path(results_dir, paper.TEACHER, task, rung, seed)
            key = run_key(fingerprint, task, seed, rung_params)
            done = _finished(path, key, results_dir, rung_params)
            if done is None:
                work = params.path("run_dir") / "finetune" / "budget" / f"{task}-n{rung}-seed{seed}"
                done = _write_run(path, paper.TEACHER, _counted(task, model_path, seed, rung_params, work), key,
                                  provenance)
            else:
                done = results_io.to_dict(_reused(done, path))
            heldout = done["metrics_by_split"][budget_rule.HELDOUT]["score"]
            floor = done["predictions"][budget_rule.HELDOUT].get("floor")
            aim = budget_rule.target(task, floor, params)
            measured.append({"max_train_samples": rung, "train_examples": done["train"]["features"],
                             "n_epoch": task_hparams(task, rung_params)["n_epoch"],
                             "heldout_score": heldout, "floor": floor, "target": aim, "passed": heldout >= aim,
                             "train_seconds": done["train"]["seconds"], "record": results_io.repo_relative(path)})
            if heldout >= aim:
                break
        chosen = measured[-1]
        record[task] = {"rungs": measured, "chosen": chosen["max_train_samples"], "passed": chosen["passed"],
                        "heldout_rows": params.heldout_rows, "margin": params.budget_margin,
                        "stated_target": (params.budget_targets or {}).get(task)}
        params = budget_rule.with_budget(params, task, chosen["max_train_samples"])
    return params, record


# settings besides task_hparams that change a fine-tuning result (those a parameter class has)
_RESULT_SETTINGS = ("max_length", "imdb_max_length", "imdb_truncation", "squad_max_length", "doc_stride",
                    "max_answer_length", "n_best", "task_alpha", "squad_alpha", "temperature", "precision",
                    "group_by_length")


def model_fingerprint(model_path, mirror=None):
    """First 16 hex digits of a sha256 over what a local model folder gives a score: its config, weights and
    tokenizer files (those of hub.TOKENIZER_FILES it holds), so a retrained model or a changed tokenizer gets a new one;
    a hub id that is not available locally stands for itself."""
    local = Path(hub.resolve(str(model_path), mirror))
    if not local.is_dir():
        return str(model_path)
    digest = hashlib.sha256()
    named = [local / name for name in ("config.json", *hub.TOKENIZER_FILES) if (local / name).is_file()]
    for file in sorted(named + hub.weight_files(local)):
        with open(file, "rb") as handle:
            digest.update(file.name.encode() + hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def data_fingerprint(data):
    """First 16 hex digits of a sha256 over the exact rows that a run uses: every split of ``data`` (load_task's
    DatasetDict, after subsetting), with its column types and label names. One changed row, another subset or
    another copy of the data changes it; the same rows give the same value on any machine."""
    digest = hashlib.sha256()
    for split, dataset in data.items():
        digest.update(json.dumps([split, dataset.features.to_dict()], sort_keys=True).encode())
        # the selected rows only (a subset is an index over the full table), in one chunk: same rows, same bytes
        table = dataset.with_format("arrow")[:].replace_schema_metadata(None).combine_chunks()
        for batch in table.to_batches(max_chunksize=65536):
            digest.update(batch.serialize())
    return digest.hexdigest()[:16]


def execution(params):
    """How a fine-tuning run executes, as far as it changes the result: the device kind, the number of processes
    (each on one device, see one_device_per_process) and the precision that actually runs ('auto' resolved)."""
    import os

    import torch
    return {"device": "cuda" if torch.cuda.is_available() else "cpu",
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "precision_run": precision_flags(params.precision)[0]}


def run_key(fingerprint, task, seed, params, distilled=False, data=None, teacher=None):
    """What a fine-tuning result depends on, as plain JSON data: the model (``model_fingerprint``), for a (D) run
    the model that teaches it (``teacher``: its model_fingerprint), the dataset (its id and ``data_fingerprint`` of
    the rows used; computed here unless given as ``data``), the task's hyperparameters, the other settings of
    ``params`` and how the run executes (``execution``); a finished result is reused only when its key matches."""
    if data is None:
        data = data_fingerprint(load_task(task, params))
    settings = {name: getattr(params, name) for name in _RESULT_SETTINGS if hasattr(params, name)}
    key = {"model": fingerprint, "task": task, "seed": seed, "distilled": distilled, "teacher": teacher,
           "dataset": dataset_id(_spec(task), params), "subset_seed": params.seed,  # picks the subsets
           "data": data, **task_hparams(task, params), **settings, **execution(params)}
    return json.loads(json.dumps(key))  # as it reads back from the results file


def _fingerprint(model_path, mirror, fingerprints):
    """model_fingerprint of ``model_path``, computed once per ``fingerprints`` cache."""
    if model_path not in fingerprints:
        fingerprints[model_path] = model_fingerprint(model_path, mirror)
    return fingerprints[model_path]


def _sweep(jobs, seeds, models, params, results_dir, provenance, run_dir, results, fingerprints):
    from tqdm.auto import tqdm
    teacher_label = params.distill_teacher
    # every task's data and model's tokenizer first: a task missing from the mirror or a model folder without its
    # tokenizer fails before any fine-tuning
    data = {task: data_fingerprint(load_task(task, params)) for task in dict.fromkeys(job[2] for job in jobs)}
    for model_path in dict.fromkeys(job[1] for job in jobs):
        check_tokenizer_files(model_path, params.mirror)
    for label, model_path, task, seed, distilled in tqdm(jobs, desc="fine-tuning runs"):
        path = result_path(results_dir, label, task, seed)
        teacher = _teacher_source(task, models, params) if distilled else None
        key = run_key(_fingerprint(model_path, params.mirror, fingerprints), task, seed, params, distilled, data[task],
                      None if teacher is None else _fingerprint(teacher, params.mirror, fingerprints))
        done = _finished(path, key, results_dir, params)
        if done is not None:
            _reused(done, path)
        rung = task_hparams(task, params)["max_train_samples"]
        if done is None and not distilled and budget_path(results_dir, label, task, rung, seed).is_file():
            done = _finished(budget_path(results_dir, label, task, rung, seed), key, results_dir, params)
            if done is not None:  # the budget rule's run at the chosen rung is this run: recorded, not redone
                done = results_io.read(results_io.write(path, done), "finetune_run")
        if done is not None:
            results.append(results_io.to_dict(done))
            continue
        teacher_path = _distill_teacher(task, models, seeds, params, results_dir, provenance) if distilled else None
        keep = label == teacher_label and seed == seeds[0] and _distills(task, params) and not (
            _is_qa(task) and getattr(params, "squad_teacher", None))  # its copy will teach the (D) runs
        save_dir = _teacher_dir(run_dir, label, task, seed) if keep else None
        result = _counted(task, model_path, seed, params, run_dir / "finetune" / _slug(label) / f"{task}-seed{seed}",
                           teacher_path, save_dir)
        results.append(_write_run(path, label, result, key, provenance))


def _teacher_source(task, models, params):
    """The model a (D) run learns from, as it was given: squad_teacher for SQuAD when set, else the distill_teacher
    model whose fine-tuned copy teaches (None when it is not among the models: _distill_teacher says so)."""
    if _is_qa(task) and getattr(params, "squad_teacher", None):
        return params.squad_teacher
    return models.get(params.distill_teacher)


def _finished(path, key, results_dir, params):
    """The result already at ``path`` when it stands for this run (its run_key is ``key``), else None, saying why
    the run is fine-tuned again. A file that does not read (cut short by a full disk or a copy) is named and re-done:
    never trusted, never a dead end."""
    if params.recompute or not path.exists():
        return None
    try:
        done = results_io.read(path, "finetune_run")
    except ValueError as err:  # not JSON (UnicodeDecodeError included), or not a fine-tuning record
        print(f"{path.relative_to(results_dir)}: damaged, fine-tuning again ({err})")
        return None
    if done.run_key != key:
        print(f"{path.relative_to(results_dir)}: its model, data or settings changed since it was written; "
              "fine-tuning again")
        return None
    if _is_qa(done.task) and not _predictions_present(done):
        print(f"{path.relative_to(results_dir)}: its predictions file is missing; fine-tuning again")
        return None
    return done


def _predictions_present(record):
    """Whether a QA run's predictions_file (relative to the repository, or absolute outside it) exists."""
    if not record.predictions_file:
        return False
    from lib import REPO_ROOT
    return (REPO_ROOT / record.predictions_file).is_file()  # an absolute path replaces REPO_ROOT


def _teacher_dir(run_dir, label, task, seed):
    return run_dir / "finetuned" / _slug(label) / f"{task}-seed{seed}"


def _distill_teacher(task, models, seeds, params, results_dir, provenance):
    """Path of the fine-tuned teacher for a (D) run, fine-tuning it first when its saved copy is missing."""
    if _is_qa(task) and getattr(params, "squad_teacher", None):
        return params.squad_teacher
    label = params.distill_teacher
    if label not in models:
        raise ParameterError("distill_teacher", f"{label!r} is not one of the models {list(models)}; name the "
                                                f"model whose fine-tuned copy teaches the others")
    save_dir = _teacher_dir(params.path("run_dir"), label, task, seeds[0])
    if not (save_dir / "config.json").exists():  # e.g. its result JSON came from another machine
        result = _counted(task, models[label], seeds[0], params, save_dir.parent / (save_dir.name + "-work"),
                           None, save_dir)
        path = result_path(results_dir, label, task, seeds[0])
        if not path.exists():
            _write_run(path, label, result, None, provenance)
    return str(save_dir)


def predictions_path(path):
    """Where the run whose record is ``path`` keeps its answers: <model>/predictions/<task>-seed<n>.json, in a
    folder of its own so that lib.results.read_runs (<model>/*.json) reads run records only."""
    return path.parent / results_io.PREDICTIONS / path.name


def _write_run(path, label, result, key, provenance):
    """Write one fine-tuning run's record (lib.results.FinetuneRun, model paths relative to the repository) and
    return it as the dict summarize reads. A SQuAD run's answers go to predictions_path first, named in the record
    as predictions_file (relative to the repository), so EM/F1 can be recomputed by the official scoring."""
    result = dict(result)
    answers = result.pop("answers", None)
    if answers is not None:
        result["predictions_file"] = results_io.repo_relative(results_io.write_json(predictions_path(path), answers))
    record = results_io.FinetuneRun(**{**result, "model_path": results_io.repo_relative(result["model_path"]),
                                       "teacher_path": results_io.repo_relative(result["teacher_path"])},
                                    model=label, run_key=key, provenance=provenance)
    results_io.write(path, record)
    return results_io.to_dict(record)


def run(params, progress=True):
    """Stage 3 or 4 (lib.config.STAGES: GlueParams or ImdbSquadParams): every (model, task, seed) of ``params``
    fine-tuned (run_sweep; one results file each under results_dir/<stage>/), each fine-tuned model it kept given
    its model card, and their summary written to results_dir/<stage>.json (lib.results.StageSummary). Returns (the
    record, the summary table). progress: the sweep's bars are tqdm's, shown always (the one stage signature)."""
    from lib.config import stage_of
    from lib.models import finetuned_card
    started, done_before = time.perf_counter(), fine_tunings
    read_back.clear()
    stage = stage_of(params)
    with hold_locks(preflight.output_folders(params)), signals_interrupt():  # one sweep per results folder
        runs, budget = run_sweep(params.models, stage_tasks(params), params.seeds, params,
                                 params.path("results_dir") / stage, with_budget=True)
        for done in runs:  # the copies that teach the (D) runs (_teacher_dir), when the sweep kept any
            kept = _teacher_dir(params.path("run_dir"), done["model"], done["task"], done["seed"])
            if (kept / "config.json").is_file():
                finetuned_card(kept, done)
    summary = summarize(runs, teacher=params.distill_teacher)
    # the runs of earlier segments (a cut stage run again) count with the seconds their records give
    seconds = time.perf_counter() - started + sum(read_back.values())
    seconds = results_io.wall_time(params, stage, seconds, fine_tunings > done_before)
    record = results_io.write_result(params, stage, seconds, summary=summary.to_dict(orient="records"),
                                     runs=len(runs), budget=budget)
    return record, summary


# --- summary ---

GLUE_SCORE = glue.SCORE


def column_order():
    """Tasks in table order: the GLUE score, the GLUE tasks as the paper's Table 1 orders them, then every other
    registered task (IMDb, SQuAD, ...) in the registry's order."""
    return (GLUE_SCORE, *glue.PAPER_ORDER, *(t for t in tasks.TASKS if t not in glue.TASKS))


def summarize(results, teacher=paper.TEACHER):
    """Long table: one row per (model, task, metric) with the median over seeds, min, max, std, n, and
    retention = median / the teacher's median (percent). Adds task 'glue', metric 'score': the macro average
    of the per-task median scores (the paper's statistic) over the GLUE tasks present; its min/max/std are
    over per-seed GLUE scores for seeds that every GLUE task has.

    Degenerate runs are named: single_class_seeds counts a task's seeds whose model predicted one class for the
    whole evaluation split (regression: one value), majority_rate is that split's majority-class rate (median
    over seeds; the score of a constant answer, in accuracy), and the 'glue' row's single_class_tasks lists the
    tasks with such seeds that its score averages in ('' when none)."""
    import pandas as pd
    values = defaultdict(list)  # (model, task, metric) -> values over seeds
    per_seed = defaultdict(dict)  # (model, seed) -> {glue task: score}
    single, majority = defaultdict(list), defaultdict(list)  # (model, task) -> per-seed flags / rates
    for r in results:
        for metric, value in r["metrics"].items():
            values[(r["model"], r["task"], metric)].append(value)
        if r["task"] in M.GLUE_TASKS:
            per_seed[(r["model"], r["seed"])][r["task"]] = r["metrics"]["score"]
        single[(r["model"], r["task"])].append(single_class(r))
        majority[(r["model"], r["task"])].append(r.get("majority_rate"))
    rows = []
    for (m, t, k), v in values.items():
        flags = [f for f in single[(m, t)] if f is not None]
        rates = [x for x in majority[(m, t)] if x is not None]
        rows.append({"model": m, "task": t, "metric": k, **M.median_and_spread(v),
                     "single_class_seeds": sum(flags) if flags else None,
                     "majority_rate": float(np.median(rates)) if rates else None})
    for model in dict.fromkeys(r["model"] for r in results):
        medians = {row["task"]: row["median"] for row in rows
                   if row["model"] == model and row["metric"] == "score" and row["task"] in M.GLUE_TASKS}
        if not medians:
            continue
        seed_scores = [M.glue_score(s) for (m, _), s in per_seed.items() if m == model and set(s) == set(medians)]
        spread = M.median_and_spread(seed_scores)
        constant = [t for t in column_order() if t in medians and any(f for f in single[(model, t)])]
        rows.append({"model": model, "task": GLUE_SCORE, "metric": "score", **spread, "median": M.glue_score(medians),
                     "single_class_tasks": ", ".join(constant)})
    table = pd.DataFrame(rows, columns=["model", "task", "metric", "median", "min", "max", "std", "n",
                                        "single_class_seeds", "majority_rate", "single_class_tasks"])
    reference = table[table.model == teacher].set_index(["task", "metric"])["median"]
    keys = list(zip(table.task, table.metric))
    table["retention"] = [100.0 * m / reference[k] if model != teacher and k in reference.index and reference[k]
                          else math.nan for model, k, m in zip(table.model, keys, table["median"])]
    order = {t: i for i, t in enumerate(column_order())}
    return table.sort_values(["model", "task", "metric"], key=lambda c: c.map(order) if c.name == "task" else c,
                             kind="stable").reset_index(drop=True)


def single_class(result):
    """Whether a fine-tuning result's model predicted one class for its whole (primary) evaluation split: its
    'single_class' field, or for results written before it existed, its predicted_label_counts. None when
    unknown (SQuAD, or no prediction summary)."""
    if result.get("single_class") is not None:
        return bool(result["single_class"])
    task = result.get("task")
    if task not in tasks.TASKS:
        return None
    first = tasks.TASKS[task].eval_splits[0]
    counts = ((result.get("predictions") or {}).get(first) or {}).get("predicted_label_counts")
    return len(counts) == 1 if counts else None


def score_table(summary, statistic="median"):
    """Wide view for the book: models x tasks (paper column order), each task's single score."""
    scores = summary[summary.metric == "score"]
    wide = scores.pivot(index="model", columns="task", values=statistic)
    return wide[[t for t in column_order() if t in wide.columns]]


def retention_fraction(summary, student=paper.STUDENT, teacher=paper.TEACHER):
    """Per task, the student's median score as a fraction of the teacher's. The summary's 'glue' row (an average
    over every task run, single-class ones included) is left out: the GLUE retention set beside the paper's 97 %
    is lib.report.counted_glue_retention's, over the tasks that count at a scale."""
    wide = score_table(summary).drop(columns=GLUE_SCORE, errors="ignore")
    for label, name in ((student, "student"), (teacher, "teacher")):  # the roles, named in the error
        if label not in wide.index:
            raise ValueError(f"{name} {label!r} has no results; models: {list(wide.index)}")
    return (wide.loc[student] / wide.loc[teacher]).dropna()
