"""The budget rule of the fine-tuning stages: each task's training budget chosen on rows held out of its train split.

A stage with ``heldout_rows`` keeps that many train-split rows out of training (never the dev split, which is
reported). With a ``budget_ladder`` for a task, the teacher (first seed) is fine-tuned at each rung of training
examples in turn and scored on those rows; the first rung where it reaches the task's target is the task's budget
for every model and seed. The target: the held-out rows' constant-answer floor plus ``budget_margin`` points, or a
stated score where a task has no constant answer (SQuAD: ``budget_targets``). The rungs are nested (a larger rung
holds every row of a smaller one), so the measurements form a learning curve. lib.finetune runs the ladder; this
module holds the rule's arithmetic.
"""
import numpy as np

from lib import tasks
from lib.config import ParameterError

HELDOUT = "heldout"  # the held-out split's name in a task's DatasetDict, its metrics and its summary


def split_train(dataset, heldout_rows, n, seed):
    """(training rows, held-out rows) of a train split: one permutation drawn with ``seed``; its first
    ``heldout_rows`` are held out, the next ``n`` (all the rest when n is None) train. Each keeps the split's order.
    The same seed gives nested training sets for growing n, and the same held-out rows for every n."""
    if heldout_rows >= len(dataset):
        raise ParameterError("heldout_rows", f"{heldout_rows} held-out rows leave none of the {len(dataset)} "
                                             "train-split rows to train on")
    order = np.random.default_rng(seed).permutation(len(dataset))
    rest = order[heldout_rows:]
    train = rest if n is None else rest[:n]
    return dataset.select(np.sort(train)), dataset.select(np.sort(order[:heldout_rows]))


def constant_floor(task, labels, score):
    """The held-out floor: the score of always answering the held-out rows' most frequent label, by the task's own
    metric (``score``: predictions, labels -> the task's score); a regression task's constant answer has no
    correlation, 0. Extractive QA has no constant answer: None (its target is stated, budget_targets)."""
    spec = tasks.TASKS[task]
    if spec.head == tasks.QA:
        return None
    if spec.regression:
        return 0.0
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    floor = score(np.full(len(labels), values[np.argmax(counts)]), labels)
    return 0.0 if floor is None or np.isnan(floor) else float(floor)


def target(task, floor, params):
    """The held-out score a rung must reach: budget_targets[task] when stated, else floor + budget_margin."""
    stated = (params.budget_targets or {}).get(task)
    if stated is not None:
        return float(stated)
    if floor is None:
        raise ParameterError("budget_targets", f"task {task!r} has no constant-answer floor: state its held-out "
                                               "target score in budget_targets")
    return floor + params.budget_margin


def with_budget(params, task, max_train_samples):
    """``params`` with task_overrides[task].max_train_samples set to one rung."""
    return with_task_settings(params, task, max_train_samples=max_train_samples)


def with_task_settings(params, task, **settings):
    """``params`` with ``settings`` (fine-tuning hyperparameters) set in task_overrides[task], the rest kept."""
    import dataclasses
    overrides = {name: dict(given) for name, given in (params.task_overrides or {}).items()}
    overrides.setdefault(task, {}).update(settings)
    return dataclasses.replace(params, task_overrides=overrides)


def check_ladder(params):
    """A ladder needs held-out rows to be measured on, and increasing rungs of registered tasks."""
    ladder = params.budget_ladder or {}
    if ladder and not params.heldout_rows:
        raise ParameterError("budget_ladder", "the rule is measured on held-out train rows: set heldout_rows > 0")
    for task, rungs in ladder.items():
        if task not in tasks.TASKS:
            raise ParameterError("budget_ladder", f"unknown task {task!r}; tasks: {list(tasks.TASKS)}")
        if (not isinstance(rungs, list) or not rungs or any(not isinstance(r, int) or r <= 0 for r in rungs)
                or sorted(set(rungs)) != rungs):
            raise ParameterError("budget_ladder", f"{task}: give increasing positive numbers of training examples, "
                                                  f"got {rungs!r}")
