"""Downstream metrics, offline: GLUE (scikit-learn / scipy), the GLUE score, SQuAD v1.1 EM/F1, seed statistics.

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
import math
import re
import string
from collections import Counter

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from lib import glue

GLUE_TASKS = tuple(glue.TASKS)
IMDB = "imdb"  # scored like a GLUE classification task (its test split), so glue_metrics knows it too
# metric names per task; "score" (the task's single number in the GLUE score) is added to each
TASK_METRICS = {**{name: task.metrics for name, task in glue.TASKS.items()}, IMDB: ("accuracy",)}
# the label set of each classification task (class ids); STS-B's gold scores lie in [0, 5]
NUM_LABELS = {**{name: task.num_labels for name, task in glue.TASKS.items() if not task.regression}, IMDB: 2}
STSB_RANGE = (0.0, 5.0)


def glue_metrics(task, predictions, labels, split="evaluation"):
    """Metrics of one evaluation split of a GLUE task (or 'imdb'), in percent, plus 'score' (see module doc).

    predictions: class ids, or logits of shape (n, num_labels) (arg-maxed); for stsb real-valued scores.
    For MNLI call it once per split (matched, mismatched); the matched split's score is the task's.
    split: named in the errors. Labels outside the task's label set raise (GLUE's test splits are unlabelled,
    label -1: scoring them would report a meaningless 0), as do predictions and labels of different lengths.
    """
    if task not in TASK_METRICS:
        raise ValueError(f"task {task!r} has no metrics; known: {sorted(TASK_METRICS)}")
    where = f"task {task!r}, split {split!r}"
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    regression = task not in NUM_LABELS  # STS-B
    if regression:
        predictions = predictions.reshape(-1).astype(float)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(-1)
    if len(predictions) != len(labels):
        raise ValueError(f"{where}: {len(predictions)} predictions for {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError(f"{where}: no examples to score")
    if regression:
        low, high = STSB_RANGE
        bad = ~((labels >= low) & (labels <= high))  # NaN is bad too
        expected = f"scores in [{low:g}, {high:g}]"
    else:
        allowed = np.arange(NUM_LABELS[task])
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
    out = {}
    for name in TASK_METRICS[task]:
        if name == "accuracy":
            value = accuracy_score(labels, predictions)
        elif name == "f1":
            value = f1_score(labels, predictions, pos_label=1, zero_division=0.0)  # F1 of the positive class
        elif name == "matthews":
            value = matthews_corrcoef(labels, predictions)  # 0 when either side is constant
        elif name == "pearson":
            value = _correlation(stats.pearsonr, predictions, labels)
        else:
            value = _correlation(stats.spearmanr, predictions, labels)  # ties get average ranks
        out[name] = 100.0 * float(value)
    out["score"] = float(np.mean([out[name] for name in TASK_METRICS[task]]))
    return out


def _correlation(fn, x, y):
    # a constant side has no defined correlation: count it as none (0), like scikit-learn's MCC does
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return fn(x, y)[0]


def glue_score(per_task):
    """Macro average of per-task scores (module doc): {task: score} or {task: glue_metrics(...) dict}.

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


# --- SQuAD v1.1, as the official evaluate-v1.1.py ---

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


def squad_em_f1(predictions, references):
    """{'exact_match', 'f1'} in percent: max over each question's reference answers, averaged over all the
    questions in ``references`` (id -> list of answer texts); a question without a prediction scores 0."""
    if not references:
        raise ValueError("no reference questions to score")
    exact = f1 = 0.0
    for qid, answers in references.items():
        if isinstance(answers, str):
            answers = [answers]
        if qid not in predictions:
            continue
        exact += max(squad_exact(predictions[qid], a) for a in answers)
        f1 += max(squad_f1(predictions[qid], a) for a in answers)
    n = len(references)
    return {"exact_match": 100.0 * exact / n, "f1": 100.0 * f1 / n}


# --- seeds ---

def median_and_spread(values):
    """Median over seeds (the paper's statistic) with min, max, sample std and count; NaNs are dropped."""
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "std": math.nan, "n": 0}
    return {"median": float(np.median(values)), "min": min(values), "max": max(values),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "n": len(values)}
