"""The nine GLUE tasks, written down once: every other module derives its task lists, columns and labels from here.

A module of its own, with no imports, so that lib.paper (import-light), lib.config, lib.budget and lib.smoke can
read it as cheaply as lib.metrics, lib.finetune, lib.latency and lib.report. The paper's numbers stay in
lib.paper; the metrics' arithmetic in lib.metrics.

Each task: its hub config of nyu-mll/glue (the name), text columns, label names in class-id order (None: STS-B's
regression scores in [0, 5]), hub splits, the dev splits scored (the first is the task's number; MNLI's
mismatched split is reported beside it), the lib.metrics metrics averaged into its score, its name and metric as
the paper's Table 1 prints them, a short table column, and the public split sizes (for lib.budget).
"""
from dataclasses import dataclass

# the task names (hub config names); code that treats one task apart names it by its constant
COLA, SST2, MRPC, STSB, QQP = "cola", "sst2", "mrpc", "stsb", "qqp"
MNLI, QNLI, RTE, WNLI = "mnli", "qnli", "rte", "wnli"

SCORE = "glue"  # the GLUE score (macro average of the task scores): its row in a summary, its column in a table
SPLITS = ("train", "validation", "test")  # the hub's splits of every task but MNLI (test labels hidden: -1)


@dataclass(frozen=True)
class Task:
    name: str
    text: tuple              # text columns: one sentence, or a pair
    label_names: tuple | None  # class names in id order (the hub's ClassLabel); None: regression
    metrics: tuple           # lib.metrics names whose mean is the task's score
    label: str               # the paper's column name
    paper_metric: str        # the paper's metric, as Table 1 describes it
    column: str              # short table column that still names the metric
    train_size: int          # examples in the public train split
    eval_size: int           # examples in the scored dev split(s)
    splits: tuple = SPLITS
    eval_splits: tuple = ("validation",)

    @property
    def regression(self):
        return self.label_names is None

    @property
    def num_labels(self):
        return 1 if self.regression else len(self.label_names)


_PAIR = ("sentence1", "sentence2")
_ENTAIL = ("entailment", "not_entailment")
_ACC, _ACC_F1 = ("accuracy",), ("accuracy", "f1")

# in the GLUE benchmark's order (the default of GlueParams.tasks)
TASKS = {task.name: task for task in (
    Task(COLA, ("sentence",), ("unacceptable", "acceptable"), ("matthews",), "CoLA", "Matthews corr.",
         "CoLA MCC", 8551, 1043),
    Task(SST2, ("sentence",), ("negative", "positive"), _ACC, "SST-2", "acc.", "SST-2 acc", 67349, 872),
    Task(MRPC, _PAIR, ("not_equivalent", "equivalent"), _ACC_F1, "MRPC", "mean of acc. and F1", "MRPC acc/F1",
         3668, 408),
    Task(STSB, _PAIR, None, ("pearson", "spearman"), "STS-B", "mean of Pearson and Spearman", "STS-B P/S",
         5749, 1500),
    Task(QQP, ("question1", "question2"), ("not_duplicate", "duplicate"), _ACC_F1, "QQP", "mean of acc. and F1",
         "QQP acc/F1", 363846, 40430),
    Task(MNLI, ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), _ACC, "MNLI", "acc., matched",
         "MNLI-m acc", 392702, 9815 + 9832,
         splits=("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"),
         eval_splits=("validation_matched", "validation_mismatched")),
    Task(QNLI, ("question", "sentence"), _ENTAIL, _ACC, "QNLI", "acc.", "QNLI acc", 104743, 5463),
    Task(RTE, _PAIR, _ENTAIL, _ACC, "RTE", "acc.", "RTE acc", 2490, 277),
    Task(WNLI, _PAIR, ("not_entailment", "entailment"), _ACC, "WNLI", "acc.", "WNLI acc", 635, 71),
)}
# the paper's Table 1 columns: the task names in alphabetical order, as it prints them
PAPER_ORDER = tuple(sorted(TASKS))
