"""One registry per kind of name: the GLUE task spec (lib.glue), the stage registry (lib.config.STAGES) and the
paper's numbers (lib.paper) are each written in one module, and everything else derives from them."""
import ast
import importlib.util
from pathlib import Path

import pytest

from lib import REPO_ROOT, budget, config, finetune, glue, latency, metrics, paper, report, smoke

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


def test_glue_task_names_are_written_only_in_lib_glue(where):
    offenders = {task: _owned(where, task, "lib/glue.py") for task in glue.TASKS}
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


# --- everything derives from the GLUE task spec ---

def test_glue_spec_feeds_every_task_list():
    assert tuple(glue.TASKS) == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
    assert paper.GLUE_TASKS == glue.PAPER_ORDER == ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli")
    assert metrics.GLUE_TASKS == tuple(glue.TASKS)
    assert config.GlueParams().tasks == list(glue.TASKS)
    assert finetune.PAPER_ORDER == ("glue", *glue.PAPER_ORDER, "imdb", "squad")
    assert list(report.TASK_COLUMNS) == ["glue", *glue.PAPER_ORDER]
    assert report.TASK_COLUMNS["cola"] == "CoLA MCC" and paper.TASK_NAMES["sst2"] == "SST-2"
    assert set(smoke.GLUE_LAYOUT) == set(glue.TASKS)
    assert budget.EVAL_SIZES["mnli"] == 9815 + 9832 and budget.TRAIN_SIZES["imdb"] == 25000
    assert latency.STSB_DEV_SIZE == 1500


def test_glue_spec_heads_and_splits():
    assert glue.TASKS["stsb"].regression and glue.TASKS["stsb"].num_labels == 1
    assert metrics.NUM_LABELS == {**{t: 2 for t in glue.TASKS if t not in ("stsb", "mnli")}, "mnli": 3, "imdb": 2}
    assert finetune.TASKS["mnli"]["num_labels"] == 3 and finetune.TASKS["mnli"]["config"] == "mnli"
    assert finetune.TASKS["mrpc"]["metric"] == "accuracy+f1"
    assert smoke.GLUE_LAYOUT["wnli"] == (["sentence1", "sentence2"], ["not_entailment", "entailment"],
                                         ["train", "validation", "test"])
    assert smoke.GLUE_LAYOUT["mnli"][2][1:3] == ["validation_matched", "validation_mismatched"]
    for task in glue.TASKS.values():  # every scored split is one of the hub's
        assert set(task.eval_splits) <= set(task.splits) and "train" in task.splits


def test_paper_table1_rows_follow_the_column_order():
    assert paper.TABLE1[paper.DISTILBERT]["cola"] == 51.3 and paper.TABLE1[paper.ELMO]["wnli"] == 56.3
    assert paper.TABLE1[paper.BERT_BASE]["score"] == 79.5
    with pytest.raises(ValueError, match="9 columns, got 8"):
        paper._table1_row(1.0, *range(8))


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
