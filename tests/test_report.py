"""lib.report and lib.paper: the book's tables read results files correctly and never invent numbers."""
import json
import statistics

import pytest
from test_results import FIELDS

from lib import findings, paper, report, results


def _provenance(profile, params=None, gpu=None):
    hardware = {"platform": "Linux", "processor": "x86_64", "cpu_count": 2, "torch_threads": 2, "gpu": gpu}
    if gpu:
        hardware.update(gpu_count=1, compute_capability="7.5", gpu_memory_gb=14.6)
    return {"created": "2026-11-21T05:00:00+00:00", "git_commit": "0123456789abcdef0123-dirty",
            "versions": {"python": "3.11.7"}, "hardware": hardware, "profile": profile,
            "scale": f"{profile} scale label", "params": params or {}}


def _write(root, profile, name, fields, params=None, wall=12.5, gpu=None):
    """results/<profile>/<name>.json through the schema: an example record of its kind (test_results.FIELDS)
    with ``fields``."""
    path = root / profile / f"{name}.json"
    kind = results.kind_of(path)
    record = results.KINDS[kind](name=name, wall_time_s=wall, provenance=_provenance(profile, params, gpu),
                                 **{**FIELDS[kind], **fields})
    results.write(path, record)
    return record


def _run(root, profile, model, task, seed, **fields):
    """One fine-tuning run file, results/<profile>/glue/<model>/<task>-seed<n>.json."""
    path = root / profile / "glue" / model / f"{task}-seed{seed}.json"
    results.write(path, results.FinetuneRun(**{**FIELDS["finetune_run"], "model": model, "task": task, "seed": seed,
                                                **fields}))


def _table3_row(model, seconds, n_examples=None, params_m=None):
    """A row of latency.json's table3 (lib.latency.table3), with the fields lib.report and LatencyResult.timings
    read: ``seconds`` is the full pass over STS-B dev's 1,500 pairs, extrapolated from the ``n_examples`` timed."""
    n_total = 1500 if n_examples else None
    return {"model": model, "extrapolated_total_s": seconds, "n_examples": n_examples, "params_m": params_m,
            "n_total": n_total, "total_s": seconds * n_examples / n_total if n_examples else seconds,
            "batch_size": 1, "repeats": 3, "warmup": 10, "interleave": "example", "mean_tokens": 32.5,
            "parameters": None if params_m is None else int(params_m * 1e6), "size_mb": None,
            "per_example_ms_median": None}


def _summary(scores):
    """A summary in the exact schema the GLUE stage writes (lib.finetune.summarize), from {model: {task: [scores]}}."""
    from lib import finetune
    from lib.metrics import TASK_METRICS
    runs = []
    for model, per_task in scores.items():
        for task, values in per_task.items():
            for seed, value in enumerate(values, 1):
                metrics = {"exact_match": value - 5, "f1": value, "score": value} if task == "squad" else \
                    {**{m: value for m in TASK_METRICS[task]}, "score": value}
                runs.append({"model": model, "task": task, "seed": seed, "metrics": metrics})
    return finetune.summarize(runs).reset_index().to_dict(orient="records")


def write_example_results(tmp_path):
    """A small results tree in the exact schemas the stages write: cpu profile, two GLUE tasks, an ablation."""
    models = {"teacher": "runs/cpu/teacher", "student": "runs/cpu/student", "no-ce": "runs/cpu/no-ce",
              "undistilled": "runs/cpu/undistilled"}
    glue = _summary({"teacher": {"cola": [40, 50, 60], "sst2": [90, 80, 85]},
                     "student": {"cola": [30, 35, 40], "sst2": [80, 82, 81]},
                     "no-ce": {"cola": [20, 20, 20], "sst2": [70, 70, 70]},
                     "undistilled": {"cola": [10, 12, 14], "sst2": [75, 76, 77]}})
    _write(tmp_path, "cpu", "glue", {"summary": glue, "runs": 18},
           params={"models": models, "learning_rate": 1e-4, "task_overrides": {"rte": {"n_epoch": 6}}})
    _write(tmp_path, "cpu", "teacher", {"teacher": "sentence-transformers/all-MiniLM-L6-v2", "parameters": 22_000_000})
    base = {"alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0, "random_init": False, "run_name": "student",
            "undistilled_name": "undistilled"}
    _write(tmp_path, "cpu", "distill-student", {"teacher": "runs/cpu/teacher", "teacher_parameters": 22_000_000,
                                                "student_parameters": 11_000_000}, params=base)
    _write(tmp_path, "cpu", "distill-no-ce", {"teacher": "runs/cpu/teacher", "teacher_parameters": 22_000_000,
                                              "student_parameters": 11_000_000},
           params={**base, "alpha_ce": 0.0, "run_name": "no-ce"})
    down = _summary({"teacher": {"imdb": [90, 92]}, "student": {"imdb": [88, 90]}})
    _write(tmp_path, "cpu", "imdb_squad", {"summary": down, "runs": 4})
    _write(tmp_path, "cpu", "latency", {"table3": [
        _table3_row("BERT-base", 100.0, 300, 110.0), _table3_row("DistilBERT", 50.0, 300, 66.0),
        _table3_row("teacher", 10.0, 300, 22.0), _table3_row("student", 6.0, 300, 11.0)], "sweep": []}, gpu=None)
    (tmp_path / "t4").mkdir(exist_ok=True)  # an empty profile folder: not a profile with results
    return tmp_path


@pytest.fixture
def results_root(tmp_path):
    return write_example_results(tmp_path)


def test_paper_rows_average_to_their_printed_scores():
    # Table 1's Score is the macro average of its row; BERT-base's printed 79.5 matches the README's MNLI (84.7)
    for model, row in paper.TABLE1.items():
        mean = statistics.mean(row[t] for t in paper.GLUE_TASKS)
        expected = paper.README_GLUE["BERT-base"]["score"] if model == "BERT-base" else row["score"]
        source = paper.README_GLUE[model] if model == "BERT-base" else row
        assert round(statistics.mean(source[t] for t in paper.GLUE_TASKS), 1) == expected, model
        assert abs(mean - row["score"]) < (0.25 if model == "BERT-base" else 0.05), model
    card = paper.MODEL_CARD_GLUE["DistilBERT"]
    assert round(statistics.mean(v for k, v in card.items() if k != "average"), 1) == 79.5


def test_paper_claim_matches_its_tables():
    assert round(100 * paper.TABLE1["DistilBERT"]["score"] / paper.TABLE1["BERT-base"]["score"]) == \
        paper.CLAIM["glue_retained_percent"]
    assert round(100 * (1 - paper.TABLE3["DistilBERT"]["params_m"] / paper.TABLE3["BERT-base"]["params_m"])) == \
        paper.CLAIM["smaller_percent"]
    assert round(paper.TABLE3["DistilBERT"]["seconds"] / paper.TABLE3["BERT-base"]["seconds"], 2) == 0.61


def test_missing_results_are_none_and_say_not_run(tmp_path):
    assert report.load("cpu", "glue", tmp_path) is None
    assert report.profiles(tmp_path / "nothing") == []
    message = report.not_run("t4", "glue")
    assert "Not run at this scale yet" in message and "PROFILE=t4 STAGES=glue" in message
    assert "STAGES=distill" in report.not_run("cpu", "distill-student")
    assert "STAGES=teacher" in report.not_run("cpu", "teacher_logits")


def test_corrupt_results_file_raises_naming_it(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "glue.json").write_text("{not json")
    with pytest.raises(ValueError, match="glue.json"):
        report.load("cpu", "glue", tmp_path)
    (tmp_path / "cpu" / "glue.json").write_text(json.dumps({"name": "glue", "wall_time_s": 1.0, "summary": []}))
    with pytest.raises(ValueError, match="glue.json: not a glue results file: missing field"):
        report.load("cpu", "glue", tmp_path)


def test_profiles_smallest_scale_first_and_only_with_results(results_root):
    _write(results_root, "smoke", "latency", {"table3": []})
    assert report.profiles(results_root) == ["smoke", "cpu"]


def test_glue_table_side_by_side_with_retention(results_root):
    record = report.load("cpu", "glue", results_root)
    table = report.glue_table(record)
    assert list(table.columns) == ["GLUE score", "CoLA MCC", "SST-2 acc"]
    ours = table.loc["this run"]
    assert ours.loc["teacher", "CoLA MCC"] == 50 and ours.loc["student", "SST-2 acc"] == 81  # medians
    assert ours.loc["teacher", "GLUE score"] == pytest.approx((50 + 85) / 2)
    assert ours.loc["student / teacher (%)", "CoLA MCC"] == pytest.approx(70.0)
    # the paper's score over the same two tasks, not its nine-task score
    ref = table.loc["paper"]
    assert ref.loc["BERT-base", "GLUE score"] == pytest.approx((56.3 + 92.7) / 2)
    assert ref.loc["DistilBERT / BERT-base (%)", "CoLA MCC"] == pytest.approx(100 * 51.3 / 56.3)


def test_paper_glue_uses_the_printed_score_for_all_nine_tasks():
    rows = report.paper_glue(list(paper.GLUE_TASKS))
    assert rows["BERT-base"]["glue"] == paper.TABLE1["BERT-base"]["score"]
    assert report.paper_glue_retention()["glue"] == pytest.approx(100 * 77.0 / 79.5)


def test_downstream_table_and_missing_squad(results_root):
    table = report.downstream_table(report.load("cpu", "imdb_squad", results_root))
    ours, ref = table.loc["this run"], table.loc["paper"]
    assert ours.loc["teacher", "IMDb acc (test, %)"] == 91 and ours.loc["student", "IMDb acc (test, %)"] == 89
    assert ours.loc["student / teacher (%)", "IMDb acc (test, %)"] == pytest.approx(100 * 89 / 91)
    assert pd_isnull(ours.loc["student", "SQuAD F1 (dev, %)"])  # not run here, still a paper column
    assert ref.loc["DistilBERT (D)", "SQuAD F1 (dev, %)"] == 86.9


def pd_isnull(value):
    import pandas as pd
    return pd.isna(value)


def test_latency_relative_to_bert_base_and_claim_pair(results_root):
    record = report.load("cpu", "latency", results_root)
    table = report.latency_table(record)
    assert table.loc[("this run", "DistilBERT"), "time / reference (%)"] == pytest.approx(50.0)
    assert table.loc[("this run", "student"), "time / reference (%)"] == pytest.approx(6.0)
    assert report.latency_ratio(record) == ("DistilBERT", "BERT-base", pytest.approx(50.0))
    assert table.loc[("paper", "DistilBERT"), "time / reference (%)"] == pytest.approx(100 * 410 / 668)


def test_latency_reads_the_table3_rows_the_stage_writes(tmp_path):
    record = _write(tmp_path, "cpu", "latency", {"table3": [_table3_row("teacher", 4.0, 32, params_m=4.0),
                                                            _table3_row("student", 2.0, 32)]})
    models = report.latency_models(record)
    assert models["teacher"]["seconds"] == 4.0 and models["teacher"]["params_m"] == 4.0
    assert report.latency_ratio(record)[2] == pytest.approx(50.0)
    # another shape of table3 (a dict by label, as an early version wrote) is refused when read, naming the field
    path = tmp_path / "cpu" / "latency.json"
    path.write_text(json.dumps({**results.to_dict(record), "table3": {"teacher": {"seconds": 4.0}}}))
    with pytest.raises(ValueError, match="latency.json: field 'table3' should be"):
        report.load("cpu", "latency", tmp_path)


def test_ablation_matches_runs_by_parameters_not_names(results_root):
    table = report.ablation_table("cpu", results_root)
    row = table.loc["without L_ce (distillation)"]
    assert row["run"] == "no-ce"
    # only CoLA counts (teacher MCC 50 > 0 + 5); SST-2's majority-class floor is not recorded here
    student_score = 35
    assert row["GLUE score"] == pytest.approx(20)
    assert row["change (points)"] == pytest.approx(20 - student_score)
    assert pd_isnull(row["resolved"])  # no per-run files: no seed range, no verdict
    assert row["paper change (points)"] == paper.TABLE4["without L_ce (distillation)"]
    assert pd_isnull(table.loc["random student initialisation", "GLUE score"])  # not run: no invented number
    assert table.loc["triple loss (reference)", "GLUE score"] == pytest.approx(student_score)
    # the undistilled student (named by the triple-loss run's undistilled_name), a row the paper does not have
    row = table.loc["no distillation at all (teacher-layer init only)"]
    assert row["run"] == "undistilled" and pd_isnull(row["paper change (points)"])
    assert row["change (points)"] == pytest.approx(12 - student_score)


def test_glue_gap_splits_the_macro_gap_by_task(results_root):
    record = report.load("cpu", "glue", results_root)
    gap = findings.glue_gap(record)
    assert gap == pytest.approx({"cola": (50 - 35) / 2, "sst2": (85 - 81) / 2})
    scores = report.glue_scores(record)
    assert sum(gap.values()) == pytest.approx(scores["teacher"]["glue"] - scores["student"]["glue"])
    assert findings.glue_gap(record, student="nobody") == {}


def test_run_setup_reads_what_ran_from_the_results(results_root):
    setup = findings.run_setup("cpu", results_root)
    assert setup["distill"]["ablations"] == {"no-ce": "without L_ce (distillation)"}
    assert setup["distill"]["mlm_only"] == []  # no run here trained on the masked-LM loss alone
    assert setup["distill"]["undistilled_name"] == "undistilled" and setup["distill"]["alpha_ce"] == 5.0
    assert setup["glue"]["models"] == ["teacher", "student", "no-ce", "undistilled"]
    assert setup["glue"]["learning_rate"] == 1e-4 and setup["glue"]["task_overrides"] == {"rte": {"n_epoch": 6}}
    assert setup["teacher"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "latency" in setup and findings.run_setup("t4", results_root) == {}


def test_table1_leaves_ablation_students_to_table4(results_root):
    assert report.ablation_models("cpu", results_root) == ["no-ce"]
    table = report.glue_table(report.load("cpu", "glue", results_root), exclude=["no-ce"])
    ours = table.loc["this run"]
    assert "no-ce" not in ours.index and "no-ce / teacher (%)" not in ours.index
    assert ours.loc["undistilled / teacher (%)", "CoLA MCC"] == pytest.approx(100 * 12 / 50)


def test_single_class_models_need_every_seed_constant(tmp_path):
    def run(model, task, seed, counts):
        _run(tmp_path, "cpu", model, task, seed, predictions={"validation": counts})
    run("teacher", "cola", 1, {"n": 9, "predicted_label_counts": {"1": 9}})
    run("teacher", "cola", 2, {"n": 9, "predicted_label_counts": {"1": 9}})
    run("student", "cola", 1, {"n": 9, "predicted_label_counts": {"1": 9}})
    run("student", "cola", 2, {"n": 9, "predicted_label_counts": {"0": 2, "1": 7}})  # one seed learned something
    run("teacher", "stsb", 1, {"n": 9, "mean": 2.5})  # regression: never "one class"
    assert findings.single_class_models("cpu", root=tmp_path) == {"cola": ["teacher"]}


def test_glue_table_marks_single_class_runs_and_the_scores_that_include_them(tmp_path):
    from lib import finetune
    runs = [{"model": "teacher", "task": "wnli", "seed": s, "metrics": {"accuracy": 56.3, "score": 56.3},
             "single_class": True, "majority_rate": 56.3} for s in (1, 2)]
    runs += [{"model": "teacher", "task": "rte", "seed": s, "metrics": {"accuracy": v, "score": v},
              "single_class": s == 2, "majority_rate": 52.7} for s, v in ((1, 60.0), (2, 52.7))]
    runs += [{"model": "student", "task": t, "seed": 1, "metrics": {"accuracy": 55.0, "score": 55.0},
              "single_class": False, "majority_rate": 52.7} for t in ("wnli", "rte")]
    summary = finetune.summarize(runs).to_dict(orient="records")
    record = _write(tmp_path, "cpu", "glue", {"summary": json.loads(json.dumps(summary))})  # NaN as JSON reads it
    assert report.single_class_runs(record) == {"teacher": {"wnli": (2, 2), "rte": (1, 2)}}
    table = report.glue_table(record)
    assert table.loc[("this run", "teacher"), report.SINGLE_CLASS_COLUMN] == "RTE 1/2, WNLI 2/2"
    assert table.loc[("this run", "student"), report.SINGLE_CLASS_COLUMN] == "none"
    assert table[report.SINGLE_CLASS_COLUMN].isna().sum() == len(table) - 2  # retention and paper rows: no claim
    assert "majority_rate" in report.glue_spread(record).columns
    # an older summary without the column: the per-run files tell, when the profile is given
    before = [{k: v for k, v in row.items() if k not in ("single_class_seeds", "majority_rate", "single_class_tasks")}
              for row in _summary({"teacher": {"cola": [0.0, 0.0]}})]
    old = _write(tmp_path, "t4", "glue", {"summary": before})
    for seed, counts in ((1, {"1": 9}), (2, {"1": 9})):  # written before single_class: its predicted labels tell
        _run(tmp_path, "t4", "teacher", "cola", seed, single_class=None,
             predictions={"validation": {"predicted_label_counts": counts}})
    assert report.single_class_runs(old) == {}
    assert report.single_class_runs(old, "t4", root=tmp_path) == {"teacher": {"cola": (2, 2)}}
    marked = report.glue_table(old, profile="t4", root=tmp_path)
    assert marked.loc[("this run", "teacher"), report.SINGLE_CLASS_COLUMN] == "CoLA 2/2"


def test_classify_run():
    base = {"alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0, "random_init": False}
    assert report.classify_run(base, base) is None
    assert report.classify_run({**base, "alpha_cos": 0.0}, base) == "without L_cos (cosine)"
    assert report.classify_run({**base, "random_init": True}, base) == "random student initialisation"


def test_headline_columns_per_scale(results_root):
    table = findings.headline(results_root)
    assert list(table.columns) == ["paper", "cpu"]
    assert table.loc["GLUE score: student / teacher", "paper"] == f"{100 * 77.0 / 79.5:.1f} % (9 tasks)"
    # parameters: stage 5's counts of our student and teacher (11M / 22M), never the masked-LM models' of stage 2
    assert table.loc["parameters: student / teacher", "cpu"] == "50.0 % (student / teacher, without MLM head)"
    assert table.loc["parameters: student / teacher", "paper"] == "60.0 % (DistilBERT / BERT-base, without MLM head)"
    assert table.loc["inference time: student / teacher", "cpu"] == "50.0 % (DistilBERT / BERT-base)"
    assert table.loc["SQuAD F1: student / teacher", "cpu"] == "not run"
    pair = table.loc["teacher -> student", "cpu"]
    assert "all-MiniLM-L6-v2" in pair and "11.0M-parameter student (without MLM head)" in pair
    # GLUE: only CoLA counts here (SST-2's floor is not recorded), named beside the value
    assert table.loc["GLUE score: student / teacher", "cpu"].startswith(f"{100 * 35 / 50:.1f} % (CoLA; paper on")


def test_each_derived_figure_has_one_function_and_one_value(results_root):
    """Table 1, Table 4, the scorecard and the CPU page's facts read the same numbers from the same functions."""
    record = report.load("cpu", "glue", results_root)
    table1 = report.glue_table(record, exclude=["no-ce"], profile="cpu", root=results_root).loc["this run"]
    score, counted = report.counted_glue_score("cpu", "undistilled", results_root)
    assert counted == ["cola"] and table1.loc["undistilled", "GLUE score"] == score == 12
    retention = report.counted_glue_retention("cpu", results_root, student="undistilled")[0]
    assert table1.loc["undistilled / teacher (%)", "GLUE score"] == pytest.approx(retention) == 24
    change, _, _ = report.counted_glue_change("cpu", "student", "undistilled", results_root)
    table4 = report.ablation_table("cpu", results_root)
    assert -table4.loc[report.UNDISTILLED_LABEL, "change (points)"] == pytest.approx(change) == 35 - 12
    facts = findings.scale_findings("cpu", root=results_root)
    assert facts["glue_gain"] == pytest.approx(change) and facts["glue_undistilled"] == pytest.approx(retention)
    assert facts["parameters"] == report.encoder_parameter_ratio("cpu", "student", "teacher", results_root) == 50
    assert report.encoder_parameters_m("cpu", "student", results_root) == 11.0
    assert report.task_set_label(["sst2", "stsb"]) == "SST-2, STS-B" and report.task_set_label([]) == "none"


def test_retention_error_bars_carry_both_seed_spreads():
    # student 80-90, teacher 95-105: from 80/105 to 90/95, never the student's spread over the teacher's median
    low, high = report.retention_span([80, 85, 90], [95, 100, 105])
    assert (low, high) == (pytest.approx(100 * 80 / 105), pytest.approx(100 * 90 / 95))
    low, high = report.retention_span([-5, 2], [40, 50])  # a negative score: the four corners, ordered
    assert (low, high) == (pytest.approx(-12.5), pytest.approx(5.0))
    assert report.retention_span([1, 2], [0, 3]) is None  # a teacher seed at 0: unbounded


def test_teacher_logits_prefers_the_largest_scale(tmp_path):
    assert report.teacher_logits(tmp_path) is None
    for profile in ("smoke", "t4"):
        _write(tmp_path, profile, "teacher_logits", {"tokens": ["a", "b"], "logits": [1.0, 0.5], "text": "x"})
    assert report.teacher_logits(tmp_path)[0] == "t4"


def test_results_files_hold_no_nan(tmp_path):
    import math
    path = results.write_json(tmp_path / "x.json", {"retention": math.nan, "rows": [1.0, float("nan")]})
    assert json.loads(path.read_text()) == {"retention": None, "rows": [1.0, None]}
    with pytest.raises(ValueError, match="not JSON compliant"):
        results.write_json(tmp_path / "y.json", {"seconds": math.inf})
    for path in report.RESULTS_ROOT.rglob("*.json"):  # the committed results: strict JSON
        json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path}: {name}"))


def test_downstream_table_has_the_imdb_majority_floor(tmp_path):
    from lib import finetune
    runs = [{"model": m, "task": "imdb", "seed": s, "metrics": {"accuracy": v, "score": v}, "majority_rate": 50.4}
            for m, values in (("teacher", [80, 82]), ("student", [70, 72])) for s, v in enumerate(values, 1)]
    summary = finetune.summarize(runs).reset_index().to_dict(orient="records")
    _write(tmp_path, "cpu", "imdb_squad", {"summary": summary, "runs": 4})
    record = report.load("cpu", "imdb_squad", tmp_path)
    table = report.downstream_table(record, profile="cpu", root=tmp_path)
    assert table.loc["this run"].loc[report.FLOOR_ROW, "IMDb acc (test, %)"] == 50.4
    assert report.FLOOR_ROW not in report.downstream_table(record).loc["this run"].index  # no profile: no floor
