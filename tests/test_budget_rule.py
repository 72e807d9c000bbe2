"""lib.budget_rule and the ladder lib.finetune runs with it: held-out train rows, nested rungs, floors, the choice."""
import datasets
import numpy as np
import pytest

from lib import budget_rule, finetune as T
from lib.config import ParameterError
from tests.test_finetune import glue_dir, glue_params, models, one_thread, sentiment_rows, squad_params, write_hub_dataset  # noqa: F401


def test_held_out_rows_never_train_and_the_rungs_are_nested():
    rows = datasets.Dataset.from_dict({"idx": list(range(100))})
    small_train, heldout = budget_rule.split_train(rows, 20, 30, seed=5)
    large_train, heldout_again = budget_rule.split_train(rows, 20, 60, seed=5)
    held = set(heldout["idx"])
    assert len(held) == 20 and held == set(heldout_again["idx"])
    assert not held & set(large_train["idx"])
    assert set(small_train["idx"]) < set(large_train["idx"]) and len(large_train) == 60
    assert list(large_train["idx"]) == sorted(large_train["idx"])  # the split's order is kept
    everything, _ = budget_rule.split_train(rows, 20, None, seed=5)
    assert len(everything) == 80
    with pytest.raises(ParameterError, match="heldout_rows"):
        budget_rule.split_train(rows, 100, None, seed=5)


def test_constant_floor_is_the_majority_answer_scored_by_the_tasks_metric():
    from lib import metrics
    labels = np.array([1, 1, 1, 0])

    def score(task):
        return lambda p, y: metrics.task_metrics(task, p, y)["score"]
    assert budget_rule.constant_floor("sst2", labels, score("sst2")) == pytest.approx(75.0)
    assert budget_rule.constant_floor("cola", labels, score("cola")) == 0.0  # MCC of a constant answer
    # MRPC's score is the mean of accuracy and F1: always "1" scores accuracy 75 and F1 2*0.75/(1.75) = 85.71
    assert budget_rule.constant_floor("mrpc", labels, score("mrpc")) == pytest.approx((75.0 + 600 / 7) / 2)
    assert budget_rule.constant_floor("stsb", np.array([0.5, 3.0]), None) == 0.0
    assert budget_rule.constant_floor("squad", None, None) is None


def test_a_rung_target_is_the_floor_plus_the_margin_or_the_stated_score(tmp_path, glue_dir):
    params = glue_params(tmp_path, glue_dir, heldout_rows=10, budget_margin=7.5, budget_targets={"squad": 25})
    assert budget_rule.target("sst2", 50.0, params) == 57.5
    assert budget_rule.target("squad", None, params) == 25.0
    with pytest.raises(ParameterError, match="budget_targets"):
        budget_rule.target("squad", None, glue_params(tmp_path, glue_dir))


@pytest.mark.parametrize("ladder, message", [({"sst2": [20, 10]}, "increasing"), ({"sst2": []}, "increasing"),
                                             ({"nope": [10]}, "unknown task")])
def test_a_bad_ladder_is_refused_naming_the_parameter(tmp_path, glue_dir, ladder, message):
    with pytest.raises(ParameterError, match=message):
        glue_params(tmp_path, glue_dir, heldout_rows=10, budget_ladder=ladder)
    with pytest.raises(ParameterError, match="heldout_rows"):
        glue_params(tmp_path, glue_dir, budget_ladder={"sst2": [10]})


def test_the_ladder_stops_at_the_first_rung_that_reaches_its_target_and_its_run_is_reused(tmp_path, glue_dir, models):
    from lib import results as results_io
    calls = []
    real = T._finetune

    def counting(task, model_path, seed, params, *args, **kwargs):
        calls.append((model_path, T.task_hparams(task, params)["max_train_samples"], seed))
        return real(task, model_path, seed, params, *args, **kwargs)

    T._finetune, original = counting, T._finetune
    try:
        # the teacher learns 'good'/'bad' from 200 rows (4 epochs at this learning rate), not from 8
        params = glue_params(tmp_path, glue_dir, models={"teacher": models["bert"]}, heldout_rows=40,
                             budget_ladder={"sst2": [8, 200, 400]}, budget_margin=20.0, n_epoch=4.0)
        runs, budget = T.run_sweep(params.models, ["sst2"], [1, 2], params, tmp_path / "results", provenance={},
                                   with_budget=True)
    finally:
        T._finetune = original
    rungs = budget["sst2"]["rungs"]
    assert [r["max_train_samples"] for r in rungs] == [8, 200] and budget["sst2"]["chosen"] == 200
    assert [r["train_examples"] for r in rungs] == [8, 200]
    assert [r["passed"] for r in rungs] == [False, True] and budget["sst2"]["passed"]
    assert rungs[0]["heldout_score"] < rungs[0]["target"] <= rungs[1]["heldout_score"]
    floor = rungs[1]["floor"]
    assert 40.0 <= floor <= 80.0 and rungs[1]["target"] == floor + 20.0
    # seed 1 at the chosen rung is the ladder's own run: fine-tuned once; seed 2 is new
    assert calls == [(models["bert"], 8, 1), (models["bert"], 200, 1), (models["bert"], 200, 2)]
    assert [r["train"]["features"] for r in runs] == [200, 200]
    seed1 = results_io.read(tmp_path / "results" / "teacher" / "sst2-seed1.json", "finetune_run")
    ladder_run = results_io.read(T.budget_path(tmp_path / "results", "teacher", "sst2", 200, 1))
    assert seed1.metrics_by_split == ladder_run.metrics_by_split and "heldout" in seed1.metrics_by_split
    assert results_io.read_runs(tmp_path / "results") == [seed1, results_io.read(tmp_path / "results" / "teacher" /
                                                                                  "sst2-seed2.json", "finetune_run")]


def test_a_squad_ladder_scores_held_out_questions_against_its_stated_target(tmp_path, models):
    import dataclasses
    params = squad_params(tmp_path)
    params = dataclasses.replace(params, models={"teacher": models["bert"]}, heldout_rows=12,
                                 budget_ladder={"squad": [12]}, budget_targets={"squad": 101.0})
    _, budget = T.run_sweep(params.models, ["squad"], [1], params, tmp_path / "results", provenance={},
                            with_budget=True)
    rung, = budget["squad"]["rungs"]
    assert rung["target"] == 101.0 and rung["floor"] is None and not rung["passed"] and not budget["squad"]["passed"]
    assert budget["squad"]["chosen"] == 12  # none reached its target: the last rung, said so
    assert 0.0 <= rung["heldout_score"] <= 100.0
