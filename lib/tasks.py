"""The downstream tasks, written down once: GLUE's nine, IMDb and SQuAD 1.1, each one ``Task`` in ``TASKS``.

A task is everything the project needs to fine-tune, score, report and fake it: where its data is (hub id,
config, splits, text columns), its head (classification, regression or extractive QA), its metric (an
`evaluate` module and how the module's outputs combine into the task's score), its names in the paper's
tables, its public split sizes (lib.budget) and its smoke-profile stand-in (a row generator, lib.smoke).
lib.finetune, lib.metrics, lib.smoke, lib.budget, lib.paper, lib.report and lib.config derive from here; a new
task is one ``register(Task(...))`` (tests/test_tasks.py registers a toy task from the test file alone).

Import-light (lib.smoke's generators are plain functions of a random.Random), so lib.paper can read it.
"""
from dataclasses import dataclass
from typing import Callable

from lib import smoke

# the task names (hub config names for GLUE); code that treats one task apart names it by its constant
COLA, SST2, MRPC, STSB, QQP = "cola", "sst2", "mrpc", "stsb", "qqp"
MNLI, QNLI, RTE, WNLI = "mnli", "qnli", "rte", "wnli"
IMDB, SQUAD = "imdb", "squad"

CLASSIFICATION, REGRESSION, QA = "classification", "regression", "qa"  # the heads
SPLITS = ("train", "validation", "test")  # the hub's splits of every GLUE task but MNLI (test labels hidden: -1)


@dataclass(frozen=True, kw_only=True)
class Metric:
    """How a task is scored: an `evaluate` module, loaded like models and data (lib.hub.load_metric: the mirror's
    copy, else the hub; lib.metrics falls back to its own implementation of the module when neither has it)."""
    module: str                # evaluate module id, e.g. evaluate-metric/glue
    config: str | None = None  # its config, e.g. mrpc
    outputs: dict              # the module's output name -> ours (results files and tables)
    score: tuple               # our names whose mean is the task's score (its number in the GLUE score)
    percent: bool = False      # the module reports percent already (SQuAD); else fractions, times 100 here


@dataclass(frozen=True, kw_only=True)
class Smoke:
    """The task's stand-in in the smoke profile's offline hub (lib.smoke writes it under ``dataset``)."""
    dataset: str               # smoke hub id (a config folder under it when the task has a config)
    row: Callable              # (rng, i) -> one example whose label follows from its words (learnable)
    sizes: dict                # split -> number of rows
    hidden_test_labels: bool = False  # test splits carry label -1, as GLUE's hub copies do
    idx: bool = False          # an int32 ``idx`` column, as GLUE's


@dataclass(frozen=True, kw_only=True)
class Task:
    name: str
    dataset: str                      # hub id of the real data
    config: str | None = None         # its config (GLUE: the task name)
    dataset_param: str | None = None  # the stage parameter that names the copy to load instead (smoke/glue, ...)
    splits: tuple = SPLITS            # the hub's splits
    eval_splits: tuple = ("validation",)  # scored; the first is the task's number (MNLI: mismatched beside it)
    text: tuple                       # text columns: one text, a pair, or SQuAD's (question, context)
    label_names: tuple | None = None  # class names in id order (the hub's ClassLabel); None: regression or QA
    head: str = CLASSIFICATION
    value_range: tuple | None = None  # regression: the range gold scores lie in
    max_length_param: str = "max_length"     # the stage parameter giving its tokens per example
    truncation_param: str | None = None      # the stage parameter choosing head / head+tail truncation
    metric: Metric
    smoke: Smoke
    glue: bool = False                # a GLUE benchmark task: averaged into the GLUE score, a Table 1 column
    label: str                        # its name as the paper prints it
    paper_metric: str = ""            # the paper's metric, as Table 1 describes it
    column: str = ""                  # short table column that still names the metric
    train_size: int | None = None     # examples in the public train split (lib.budget)
    eval_size: int | None = None      # examples in the scored split(s)

    @property
    def regression(self):
        return self.head == REGRESSION

    @property
    def num_labels(self):
        return {CLASSIFICATION: len(self.label_names or ()), REGRESSION: 1}.get(self.head)

    @property
    def metrics(self):
        """Our metric names averaged into the score (lib.report compares them: ("matthews",), ("accuracy",))."""
        return self.metric.score


def _glue(name, text, label_names, outputs, label, paper_metric, column, train_size, eval_size,
          splits=SPLITS, eval_splits=("validation",)):
    """A GLUE task: nyu-mll/glue's config ``name``, scored by evaluate-metric/glue's config of the same name."""
    return Task(name=name, dataset="nyu-mll/glue", config=name, dataset_param="glue_dataset", splits=splits,
                eval_splits=eval_splits, text=text, label_names=label_names,
                head=CLASSIFICATION if label_names else REGRESSION, value_range=None if label_names else (0.0, 5.0),
                metric=Metric(module="evaluate-metric/glue", config=name, outputs=outputs,
                              score=tuple(outputs.values())),
                smoke=Smoke(dataset="smoke/glue", row=getattr(smoke, f"{name}_row"), sizes=smoke.glue_sizes(splits),
                            hidden_test_labels=True, idx=True),
                glue=True, label=label, paper_metric=paper_metric, column=column, train_size=train_size,
                eval_size=eval_size)


_PAIR = ("sentence1", "sentence2")
_ENTAIL = ("entailment", "not_entailment")
_ACC = {"accuracy": "accuracy"}
_ACC_F1 = {"accuracy": "accuracy", "f1": "f1"}

# in the GLUE benchmark's order (the default of GlueParams.tasks), then IMDb and SQuAD
TASKS = {task.name: task for task in (
    _glue(COLA, ("sentence",), ("unacceptable", "acceptable"), {"matthews_correlation": "matthews"}, "CoLA",
          "Matthews corr.", "CoLA MCC", 8551, 1043),
    _glue(SST2, ("sentence",), ("negative", "positive"), _ACC, "SST-2", "acc.", "SST-2 acc", 67349, 872),
    _glue(MRPC, _PAIR, ("not_equivalent", "equivalent"), _ACC_F1, "MRPC", "mean of acc. and F1", "MRPC acc/F1",
          3668, 408),
    _glue(STSB, _PAIR, None, {"pearson": "pearson", "spearmanr": "spearman"}, "STS-B", "mean of Pearson and Spearman",
          "STS-B P/S", 5749, 1500),
    _glue(QQP, ("question1", "question2"), ("not_duplicate", "duplicate"), _ACC_F1, "QQP", "mean of acc. and F1",
          "QQP acc/F1", 363846, 40430),
    _glue(MNLI, ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), _ACC, "MNLI", "acc., matched",
          "MNLI-m acc", 392702, 9815 + 9832,
          splits=("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"),
          eval_splits=("validation_matched", "validation_mismatched")),
    _glue(QNLI, ("question", "sentence"), _ENTAIL, _ACC, "QNLI", "acc.", "QNLI acc", 104743, 5463),
    _glue(RTE, _PAIR, _ENTAIL, _ACC, "RTE", "acc.", "RTE acc", 2490, 277),
    _glue(WNLI, _PAIR, ("not_entailment", "entailment"), _ACC, "WNLI", "acc.", "WNLI acc", 635, 71),
    Task(name=IMDB, dataset="stanfordnlp/imdb", dataset_param="imdb_dataset", splits=("train", "test", "unsupervised"),
         eval_splits=("test",), text=("text",), label_names=("neg", "pos"), max_length_param="imdb_max_length",
         truncation_param="imdb_truncation",
         metric=Metric(module="evaluate-metric/accuracy", outputs=_ACC, score=("accuracy",)),
         smoke=Smoke(dataset="smoke/imdb", row=smoke.imdb_row, sizes={"train": 200, "test": 48}),
         label="IMDb", paper_metric="acc. (test)", column="IMDb acc", train_size=25000, eval_size=25000),
    Task(name=SQUAD, dataset="rajpurkar/squad", dataset_param="squad_dataset", splits=("train", "validation"),
         text=("question", "context"), head=QA, max_length_param="squad_max_length",
         metric=Metric(module="evaluate-metric/squad", outputs={"exact_match": "exact_match", "f1": "f1"},
                       score=("f1",), percent=True),
         smoke=Smoke(dataset="smoke/squad", row=smoke.squad_row, sizes={"train": 200, "validation": 64}),
         label="SQuAD 1.1", paper_metric="EM / F1 (dev)", column="SQuAD F1", train_size=87599, eval_size=10570),
)}
BUILTIN = tuple(TASKS)  # generated together into the smoke hub (lib.smoke.build_datasets), in this order


def stage_tasks(params):
    """The tasks a stage's parameters ask for: GlueParams.tasks, or each task whose run_<task> flag is on
    (ImdbSquadParams.run_imdb, run_squad), in the registry's order."""
    if hasattr(params, "tasks"):
        return list(params.tasks)
    return [name for name in TASKS if getattr(params, f"run_{name}", False)]


def get(name):
    """The registered task ``name``; KeyError naming the registered ones."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; tasks: {list(TASKS)}")
    return TASKS[name]


def register(task):
    """Add a task to the registry (a new task, e.g. in a test or a notebook): the fine-tuning stage, lib.metrics and
    the smoke hub (its ``smoke.dataset`` generated on first use) then know it. Returns the task."""
    if task.name in BUILTIN:
        raise ValueError(f"task {task.name!r} is built in; pick another name")
    TASKS[task.name] = task
    return task


def unregister(name):
    if name in BUILTIN:
        raise ValueError(f"task {name!r} is built in")
    TASKS.pop(name, None)
