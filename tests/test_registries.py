"""One registry per kind of name: the task registry (lib.tasks), the stage registry (lib.config.STAGES) and the
paper's numbers (lib.paper) are each written in one module, and everything else derives from them."""
import ast
import importlib.util
from pathlib import Path

import pytest

from lib import REPO_ROOT, budget, config, finetune, glue, latency, metrics, paper, report, smoke, tasks

SCANNED = sorted((REPO_ROOT / "lib").glob("*.py")) + sorted((REPO_ROOT / "book" / "_ext").glob("*.py"))

# Literals that are also another thing's name, so a second module legitimately holds them:
ALSO_ALLOWED = {
    # lib.glue.SCORE: the GLUE score's row in a summary and column in a table; the same word as the stage
    "glue": {"lib/glue.py"},
    # the per-example time of each model in stage 5's comparison with glue.json (a record field, not the stage)
    "latency": {"lib/latency.py"},
    # finetune's dataset column holding a fine-tuned teacher's logits (not stage 1's results file)
    "teacher_logits": {"lib/finetune.py"},
    # the distillation loop's progress-bar label
    "distill": {"lib/training.py"},
    # lib.models' model card names the QA pipeline by the task (another module's code, left as it was)
    "squad": {"lib/models.py"},
}
# "teacher" is left out of the stage-name check: it is also the authors' parameter name (TeacherParams.teacher,
# DistillParams.teacher), the results field that records it, and the model label lib.paper.TEACHER.
NOT_CHECKED = {"teacher"}


def _literals(path):
    """{value: count} of the str/int/float constants in a module, docstrings left out (numbers by absolute value:
    the paper's -2.96 parses as -(2.96))."""
    tree = ast.parse(Path(path).read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings and not isinstance(node.value, bool):
            if isinstance(node.value, (str, int, float)):
                found.add(node.value)
    return found


@pytest.fixture(scope="module")
def where():
    """literal -> the scanned modules (repo-relative) that hold it."""
    holders = {}
    for path in SCANNED:
        for value in _literals(path):
            holders.setdefault(value, set()).add(path.relative_to(REPO_ROOT).as_posix())
    return holders


def _owned(where, literal, owner):
    allowed = {owner} | ALSO_ALLOWED.get(literal, set())
    return sorted(where.get(literal, set()) - allowed)


def test_task_names_are_written_only_in_lib_tasks(where):
    offenders = {task: _owned(where, task, "lib/tasks.py") for task in tasks.BUILTIN}
    assert {task: files for task, files in offenders.items() if files} == {}


def test_stage_notebook_and_results_names_are_written_only_in_lib_config(where):
    names = set(config.STAGES) | {stage.notebook for stage in config.STAGES.values()}
    names |= {name for stage in config.STAGES.values() for name in stage.results}
    offenders = {name: _owned(where, name, "lib/config.py") for name in names - NOT_CHECKED}
    assert {name: files for name, files in offenders.items() if files} == {}
    assert where.get("01_teacher") == {"lib/config.py"}  # the scan sees the registry itself


def test_paper_numbers_are_written_only_in_lib_paper(where):
    numbers = set()
    for table in (paper.TABLE1, paper.TABLE2, paper.TABLE3, paper.README_GLUE, paper.MODEL_CARD_GLUE):
        numbers |= {abs(v) for row in table.values() for v in row.values() if v is not None}
    numbers |= {abs(v) for v in (*paper.TABLE4.values(), *paper.MRPC_ISSUE.values())}
    # small round integers (CLAIM's 40 and 60, ...) are also ordinary sizes and counts elsewhere: not checked
    numbers = {v for v in numbers if not (float(v).is_integer() and v < 100)}
    assert 51.3 in numbers and 668 in numbers and 2.96 in numbers
    offenders = {v: _owned(where, v, "lib/paper.py") for v in numbers}
    assert {v: files for v, files in offenders.items() if files} == {}


def test_the_scan_finds_a_literal_outside_its_owner(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""cola in a docstring is fine."""\nX = {"cola": 1, "score": -2.96}\n')
    assert {"cola", 2.96} <= _literals(module) and "cola in a docstring is fine." not in _literals(module)


# --- everything derives from the task registry ---

def test_the_registry_feeds_every_task_list():
    assert tuple(tasks.TASKS) == tasks.BUILTIN == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli",
                                                   "imdb", "squad")
    assert tuple(glue.TASKS) == tasks.BUILTIN[:9] and all(tasks.TASKS[t].glue for t in glue.TASKS)
    assert paper.GLUE_TASKS == glue.PAPER_ORDER == ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli")
    assert metrics.GLUE_TASKS == tuple(glue.TASKS)
    assert config.GlueParams().tasks == list(glue.TASKS)
    assert finetune.column_order() == ("glue", *glue.PAPER_ORDER, "imdb", "squad")
    assert list(report.TASK_COLUMNS) == ["glue", *glue.PAPER_ORDER]
    assert report.TASK_COLUMNS["cola"] == "CoLA MCC" and paper.TASK_NAMES["sst2"] == "SST-2"
    assert paper.TASK_NAMES["squad"] == "SQuAD 1.1" and set(paper.TASK_NAMES) == set(tasks.TASKS)
    assert budget.EVAL_SIZES["mnli"] == 9815 + 9832 and budget.TRAIN_SIZES["imdb"] == 25000
    assert set(budget.TRAIN_SIZES) == set(tasks.TASKS)
    assert latency.STSB_DEV_SIZE == 1500


def test_task_heads_splits_and_metrics():
    assert tasks.TASKS["stsb"].regression and tasks.TASKS["stsb"].num_labels == 1
    assert {t: task.num_labels for t, task in tasks.TASKS.items()} == {
        **{t: 2 for t in glue.TASKS if t not in ("stsb", "mnli")}, "stsb": 1, "mnli": 3, "imdb": 2, "squad": None}
    assert tasks.TASKS["mnli"].config == "mnli" and tasks.TASKS["mnli"].dataset_param == "glue_dataset"
    assert tasks.TASKS["mrpc"].metric.module == "evaluate-metric/glue" and tasks.TASKS["mrpc"].metric.config == "mrpc"
    assert tasks.TASKS["mrpc"].metrics == ("accuracy", "f1") and tasks.TASKS["cola"].metrics == ("matthews",)
    assert tasks.TASKS["squad"].metric.score == ("f1",) and tasks.TASKS["squad"].head == tasks.QA
    assert tasks.TASKS["wnli"].smoke.row is smoke.wnli_row and tasks.TASKS["wnli"].smoke.dataset == "smoke/glue"
    for task in tasks.TASKS.values():  # every scored split is one of the hub's; every smoke split too
        assert set(task.eval_splits) <= set(task.splits) and "train" in task.splits
        assert set(task.smoke.sizes) <= set(task.splits) and set(task.eval_splits) <= set(task.smoke.sizes)
        assert set(task.metric.score) <= set(task.metric.outputs.values())
        assert task.metric.module in metrics.ORACLES  # scored offline too


def test_paper_table1_rows_are_keyed_by_task():
    assert paper.TABLE1[paper.DISTILBERT]["cola"] == 51.3 and paper.TABLE1[paper.ELMO]["wnli"] == 56.3
    assert paper.TABLE1[paper.BERT_BASE]["score"] == 79.5
    for row in paper.TABLE1.values():
        assert set(row) == {"score", *glue.TASKS}


def test_a_tenth_glue_task_is_a_column_without_a_paper_number():
    # positional Table 1 rows broke lib.paper at import; keyed rows leave the new column empty
    import subprocess
    import sys
    code = """
from lib import smoke, tasks
tasks.register(tasks.Task(name="ax", dataset="nyu-mll/glue", config="ax", dataset_param="glue_dataset",
    text=("premise", "hypothesis"), label_names=("yes", "no"), glue=True, label="AX",
    metric=tasks.Metric(module="evaluate-metric/glue", config="rte", outputs={"accuracy": "accuracy"}, score=("accuracy",)),
    smoke=tasks.Smoke(dataset="smoke/ax", row=smoke.rte_row, sizes={"train": 8, "validation": 8})))
from lib import glue, paper, report
assert "ax" in glue.TASKS and "ax" in paper.GLUE_TASKS and "ax" not in paper.TABLE1["DistilBERT"]
assert report.paper_glue(["ax", "cola"])["DistilBERT"] == {"ax": None, "cola": 51.3, "glue": 51.3}
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


# --- the stage registry ---

def test_stage_registry():
    assert [s.notebook for s in config.STAGES.values()] == ["01_teacher", "02_distill", "03_glue", "04_imdb_squad",
                                                            "05_latency"]
    assert config.STAGES["distill"].results == ("distill-" + config.DistillParams.run_name,)
    assert config.stage_of_results("teacher_logits") == "teacher"
    assert config.stage_of_results("distill-no-ce") == "distill"
    assert config.stage_of_results("imdb_squad") == "imdb_squad" and config.stage_of_results("nope") is None
    for stem in {s.notebook for s in config.STAGES.values()}:
        assert (REPO_ROOT / "notebooks" / f"{stem}.py").is_file()


def test_book_stage_pages_take_results_names_from_the_registry():
    spec = importlib.util.spec_from_file_location("stage_pages", REPO_ROOT / "book" / "_ext" / "stage_pages.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    assert [pages.result_of(s.notebook) for s in config.STAGES.values()] == [
        "teacher", "distill-student", "glue", "imdb_squad", "latency"]
    assert pages.result_of("99_unknown") is None


def test_report_reproduce_command_names_the_stage():
    assert report.reproduce_command("cpu", "teacher_logits") == "make reproduce PROFILE=cpu STAGES=teacher"
    assert report.reproduce_command("t4", "distill-no-ce") == "make reproduce PROFILE=t4 STAGES=distill"


def test_the_two_retentions_say_what_they_compute():
    assert report.retention_percent(45.0, 50.0) == pytest.approx(90.0)
    assert report.retention_percent(1.0, 0) is None
    assert not hasattr(report, "retention") and not hasattr(finetune, "retention")
    assert callable(finetune.retention_fraction)
