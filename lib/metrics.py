"""Downstream metrics: each task's `evaluate` module (lib.tasks: Task.metric), the GLUE score, seed statistics.

A task's metric module is loaded like its model and data (lib.hub: the mirror's copy, else the hub). Where
neither has it -- the smoke profile, the tests and a fresh clone work offline with no mirror -- ``scorer`` uses
this module's own implementation of the same module (ORACLES), with a one-line notice; tests/test_metrics.py
checks both give the same numbers on the mirror's modules, and the oracles against scikit-learn by hand.
Every metric is in percent points (0-100), like the paper's tables.

GLUE score convention. Table 1 of the paper gives one number per task and a "Score" that is the plain
macro average of that row (DistilBERT: mean(51.3, 82.2, 87.5, 89.2, 88.5, 59.9, 91.3, 86.9, 56.3) = 77.0;
ELMo 68.7 likewise). The per-task number is:
  - CoLA: Matthews correlation; SST-2, QNLI, RTE, WNLI: accuracy;
  - MNLI: matched accuracy (mismatched is reported beside it, not averaged in);
  - MRPC and QQP: the mean of accuracy and F1; STS-B: the mean of Pearson and Spearman -- the GLUE-benchmark
    convention, and the one the authors' 2019 tooling (run_glue's acc_and_f1 / corr) used. The v4 MRPC figure
    87.5 is that mean (89.6 F1 / 85.5 acc); an earlier version had reported F1 alone as "acc/F1"
    (huggingface/transformers#2447).
The paper's BERT row averages to 79.7, not the 79.5 printed: an inconsistency of the paper itself
(tests/test_metrics.py checks all three rows).
"""
import functools
import math
import re
import string
from collections import Counter

import numpy as np

from lib import glue, hub, tasks

GLUE_TASKS = tuple(glue.TASKS)
# metric names per task (at import; task_metrics reads the registry itself); "score" is added to each
TASK_METRICS = {name: task.metrics for name, task in tasks.TASKS.items()}


def task_metrics(task, predictions, labels, split="evaluation", mirror=None):
    """Metrics of one evaluation split of a classification or regression task (GLUE, IMDb, a registered one), in
    percent, plus 'score' (see module doc), computed by the task's `evaluate` module (``scorer``).

    predictions: class ids, or logits of shape (n, num_labels) (arg-maxed); for regression real-valued scores.
    For MNLI call it once per split (matched, mismatched); the matched split's score is the task's.
    split: named in the errors. Labels outside the task's label set raise (GLUE's test splits are unlabelled,
    label -1: scoring them would report a meaningless 0), as do predictions and labels of different lengths.
    """
    spec = _task(task)
    predictions, labels = _checked(spec, split, np.asarray(predictions), np.asarray(labels))
    metric = spec.metric
    outputs = scorer(metric.module, metric.config, mirror)(predictions=predictions, references=labels)
    return combine(metric, outputs)


def _task(task):
    if task not in tasks.TASKS or tasks.TASKS[task].head == tasks.QA:
        raise ValueError(f"task {task!r} has no classification metrics; known: "
                         f"{sorted(n for n, t in tasks.TASKS.items() if t.head != tasks.QA)}")
    return tasks.TASKS[task]


def _checked(spec, split, predictions, labels):
    """(predictions, labels) ready to score, or a ValueError naming the task and split and what is wrong."""
    where = f"task {spec.name!r}, split {split!r}"
    if spec.regression:
        predictions = predictions.reshape(-1).astype(float)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    if len(predictions) != len(labels):
        raise ValueError(f"{where}: {len(predictions)} predictions for {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError(f"{where}: no examples to score")
    if spec.regression:
        low, high = spec.value_range or (-math.inf, math.inf)
        bad = ~((labels >= low) & (labels <= high))  # NaN is bad too
        expected = f"scores in [{low:g}, {high:g}]"
    else:
        allowed = np.arange(spec.num_labels)
        bad = ~np.isin(labels, allowed)
        expected = f"class ids {allowed.tolist()}"
        wrong = ~np.isin(predictions, allowed)
        if wrong.any():
            raise ValueError(f"{where}: {int(wrong.sum())} predictions outside the label set ({expected}), "
                             f"e.g. {predictions[wrong][0].item()!r}")
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} of {len(labels)} labels are outside the label set ({expected}), "
                         f"e.g. {labels[bad][0].item()!r}; unlabelled rows (label -1, as in GLUE's test splits) cannot be "
                         f"scored")
    return predictions, labels


def combine(metric, outputs):
    """Our metrics (percent) from a module's outputs (metric.outputs renames them), and 'score', the mean of
    metric.score. A correlation over a constant side is undefined (NaN from the module): counted as none (0), as
    scikit-learn's MCC counts a constant answer, so a model that learned nothing scores 0, not NaN."""
    scale = 1.0 if metric.percent else 100.0
    out = {}
    for name, ours in metric.outputs.items():
        value = float(outputs[name])
        out[ours] = 0.0 if math.isnan(value) else scale * value
    out["score"] = float(np.mean([out[name] for name in metric.score]))
    return out


def glue_score(per_task):
    """Macro average of per-task scores (module doc): {task: score} or {task: task_metrics(...) dict}.

    Averages the tasks given; a partial set (e.g. the cpu profile's five tasks) is the caller's to label.
    """
    if not per_task:
        raise ValueError("glue_score needs at least one task")
    scores = []
    for task, value in per_task.items():
        if task not in GLUE_TASKS:
            raise ValueError(f"{task!r} is not a GLUE task; GLUE tasks: {GLUE_TASKS}")
        scores.append(value["score"] if isinstance(value, dict) else float(value))
    return float(np.mean(scores))


def qa_metrics(task, predictions, references, mirror=None):
    """{'exact_match', 'f1', 'score'} in percent of an extractive QA task (SQuAD v1.1) by its `evaluate` module:
    max over each question's reference answers, averaged over all the questions in ``references`` (id -> list of
    answer texts); a question without a prediction scores 0."""
    if not references:
        raise ValueError("no reference questions to score")
    metric = tasks.get(task).metric
    texts = {qid: [answers] if isinstance(answers, str) else list(answers) for qid, answers in references.items()}
    answered = [qid for qid in texts if qid in predictions]  # the module takes one prediction per reference
    if not answered:
        return combine(metric, {name: 0.0 for name in metric.outputs})
    predicted = [{"id": qid, "prediction_text": predictions[qid]} for qid in answered]
    # answer_start: the module's input features require it; its score reads only the texts
    gold = [{"id": qid, "answers": {"text": texts[qid], "answer_start": [0] * len(texts[qid])}} for qid in answered]
    outputs = scorer(metric.module, metric.config, mirror)(predictions=predicted, references=gold)
    if len(answered) < len(texts):  # an unanswered question scores 0 (the official script's rule)
        outputs = {name: value * len(answered) / len(texts) for name, value in outputs.items()}
    return combine(metric, outputs)


# --- the metric modules: `evaluate`'s, or where no copy is reachable, this project's own ---

@functools.cache
def scorer(module, config=None, mirror=None):
    """``compute(predictions=, references=)`` of an `evaluate` module: the mirror's copy or the hub's, resolved as
    models and data are (lib.hub.load_metric). Where neither can provide it (no mirror copy and no hub: the smoke
    profile, the tests, a fresh clone offline), this module's own implementation of the same module's outputs
    (ORACLES; tests/test_metrics.py checks them against the modules on the mirror), said in one line."""
    try:
        return hub.load_metric(module, config, mirror=mirror).compute
    except hub.HubUnavailableError:
        print(f"metric {module}{f' ({config})' if config else ''}: no mirror copy and no hub; scored by lib.metrics' "
              "own implementation of it (checked against the module: tests/test_metrics.py)")
        return functools.partial(ORACLES[module], config)


def glue_module(config, predictions, references):
    """evaluate-metric/glue's outputs for ``config``, computed here: the module's arithmetic (scikit-learn, scipy)."""
    from scipy import stats
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    p, r = np.asarray(predictions), np.asarray(references)
    if config == glue.COLA:
        return {"matthews_correlation": float(matthews_corrcoef(r, p))}  # 0 when either side is constant
    if config == glue.STSB:
        return {"pearson": _correlation(stats.pearsonr, p, r), "spearmanr": _correlation(stats.spearmanr, p, r)}
    out = {"accuracy": float(accuracy_score(r, p))}
    if config in (glue.MRPC, glue.QQP):
        out["f1"] = float(f1_score(r, p, pos_label=1, zero_division=0.0))  # F1 of the positive class
    return out


def accuracy_module(config, predictions, references):
    """evaluate-metric/accuracy's output, computed here."""
    from sklearn.metrics import accuracy_score
    return {"accuracy": float(accuracy_score(np.asarray(references), np.asarray(predictions)))}


def _correlation(fn, x, y):
    # undefined over a constant side (and below two points): NaN, as the module gives; ``combine`` counts it 0
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(fn(x, y)[0])  # spearman: ties get average ranks


def squad_module(config, predictions, references):
    """evaluate-metric/squad's outputs (the official evaluate-v1.1.py), computed here, in percent."""
    answer = {p["id"]: p["prediction_text"] for p in predictions}
    exact = f1 = 0.0
    for ref in references:
        if ref["id"] not in answer:
            continue
        exact += max(squad_exact(answer[ref["id"]], a) for a in ref["answers"]["text"])
        f1 += max(squad_f1(answer[ref["id"]], a) for a in ref["answers"]["text"])
    return {"exact_match": 100.0 * exact / len(references), "f1": 100.0 * f1 / len(references)}


def normalize_answer(text):
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace (official v1.1 order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact(prediction, reference):
    return float(normalize_answer(prediction) == normalize_answer(reference))


def squad_f1(prediction, reference):
    """Bag-of-tokens F1 between normalized answers."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


# the project's own implementation of each module a task names (scorer's offline stand-in, and the tests' oracle)
ORACLES = {"evaluate-metric/glue": glue_module, "evaluate-metric/accuracy": accuracy_module,
           "evaluate-metric/squad": squad_module}


# --- seeds ---

def median_and_spread(values):
    """Median over seeds (the paper's statistic) with min, max, sample std and count; NaNs are dropped."""
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "std": math.nan, "n": 0}
    return {"median": float(np.median(values)), "min": min(values), "max": max(values),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "n": len(values)}
