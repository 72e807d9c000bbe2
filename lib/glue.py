"""The GLUE benchmark's view of the task registry (lib.tasks): its tasks, their order in the paper's Table 1 and
the GLUE score's name. Nothing here is written twice: the tasks themselves are lib.tasks.Task instances."""
from lib import tasks
from lib.tasks import COLA, MNLI, MRPC, QNLI, QQP, RTE, SPLITS, SST2, STSB, WNLI, Task  # noqa: F401 (re-exported)

SCORE = "glue"  # the GLUE score (macro average of the task scores): its row in a summary, its column in a table

# the registry's GLUE benchmark tasks, in the benchmark's order (the default of GlueParams.tasks)
TASKS = {name: task for name, task in tasks.TASKS.items() if task.glue}
# the paper's Table 1 columns: the task names in alphabetical order, as it prints them
PAPER_ORDER = tuple(sorted(TASKS))
