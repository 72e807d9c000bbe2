"""lib.metrics against hand-computed values (percent points)."""
import math

import numpy as np
import pytest

from lib import metrics as M


def test_matthews_hand_computed_and_constant_predictions():
    # TP=1 FN=1 TN=2 FP=0: (1*2 - 0*1) / sqrt(1*2*2*3) = 2/sqrt(12)
    out = M.glue_metrics("cola", [1, 0, 0, 0], [1, 1, 0, 0])
    assert out["matthews"] == pytest.approx(100 * 2 / math.sqrt(12))
    assert out["score"] == out["matthews"]
    # a model that always answers the same class has no correlation, not NaN
    assert M.glue_metrics("cola", [1, 1, 1, 1], [1, 0, 1, 0])["matthews"] == 0.0


def test_accuracy_f1_average_for_mrpc_and_qqp():
    # 3 of 5 right; TP=2 FP=1 FN=1 -> precision = recall = F1 = 2/3
    for task in ("mrpc", "qqp"):
        out = M.glue_metrics(task, [1, 1, 0, 1, 0], [1, 0, 1, 1, 0])
        assert out["accuracy"] == pytest.approx(60.0)
        assert out["f1"] == pytest.approx(200 / 3)
        assert out["score"] == pytest.approx((60 + 200 / 3) / 2)
    # never predicting the positive class: F1 is 0 (not an error)
    assert M.glue_metrics("mrpc", [0, 0, 0], [1, 0, 1])["f1"] == 0.0


def test_logits_are_argmaxed():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.1, 3.0], [0.0, 5.0, 1.0]])
    out = M.glue_metrics("mnli", logits, [0, 2, 0])
    assert out["accuracy"] == pytest.approx(200 / 3)


def test_pearson_spearman_hand_computed():
    # x = 1,2,3; y = 1,2,4: cov = 3, var_x = 2, var_y = 42/9 -> r = 3 / sqrt(84/9); ranks agree -> rho = 1
    out = M.glue_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    r = 3 / math.sqrt(2 * 42 / 9)
    assert out["pearson"] == pytest.approx(100 * r)
    assert out["spearman"] == pytest.approx(100.0)
    assert out["score"] == pytest.approx((100 * r + 100) / 2)


def test_spearman_with_ties_uses_average_ranks():
    # predictions 1,2,2,3 rank as 1, 2.5, 2.5, 4 against 1..4: rho = 4.5 / sqrt(4.5 * 5)
    out = M.glue_metrics("stsb", [1.0, 2.0, 2.0, 3.0], [0.5, 1.0, 2.0, 4.0])
    assert out["spearman"] == pytest.approx(100 * 4.5 / math.sqrt(4.5 * 5))


def test_constant_regression_predictions_score_zero():
    out = M.glue_metrics("stsb", [2.5, 2.5, 2.5], [1.0, 3.0, 5.0])
    assert out["pearson"] == 0.0 and out["spearman"] == 0.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="task 'glu'"):
        M.glue_metrics("glu", [1], [1])
    with pytest.raises(ValueError, match="split 'validation': 2 predictions for 3 labels"):
        M.glue_metrics("sst2", [1, 0], [1, 0, 1], split="validation")
    with pytest.raises(ValueError, match="not a GLUE task"):
        M.glue_score({"imdb": 90.0})


def test_unlabelled_or_foreign_labels_raise_naming_the_split():
    # GLUE's test splits carry label -1: refused, not scored as accuracy 0
    with pytest.raises(ValueError, match=r"task 'rte', split 'test': 3 of 3 labels are outside the label set "
                                         r"\(class ids \[0, 1\]\), e.g. -1; unlabelled rows"):
        M.glue_metrics("rte", [0, 1, 1], [-1, -1, -1], split="test")
    # MNLI has three classes: 2 is fine there, not for a binary task
    assert M.glue_metrics("mnli", [2, 1], [2, 0])["accuracy"] == 50.0
    with pytest.raises(ValueError, match=r"split 'validation': 1 of 2 labels .* e.g. 2"):
        M.glue_metrics("sst2", [1, 0], [1, 2], split="validation")
    with pytest.raises(ValueError, match="predictions outside the label set"):
        M.glue_metrics("cola", [0, 3], [0, 1])
    # STS-B: gold similarity scores lie in [0, 5]; its test split's -1 (and NaN) are refused
    assert M.glue_metrics("stsb", [0.1, 4.9, 2.0], [0.0, 5.0, 2.5])["spearman"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"task 'stsb', split 'test': 2 of 2 labels .*scores in \[0, 5\]"):
        M.glue_metrics("stsb", [1.0, 2.0], [-1.0, -1.0], split="test")
    with pytest.raises(ValueError, match="1 of 2 labels"):
        M.glue_metrics("stsb", [1.0, 2.0], [float("nan"), 1.0])


# Table 1 of the paper: one number per task, the Score is their plain mean
PAPER_ROWS = {
    "ELMo": (68.7, dict(cola=44.1, mnli=68.6, mrpc=76.6, qnli=71.1, qqp=86.2, rte=53.4, sst2=91.5, stsb=70.4, wnli=56.3)),
    "BERT-base": (79.5, dict(cola=56.3, mnli=86.7, mrpc=88.6, qnli=91.8, qqp=89.6, rte=69.3, sst2=92.7, stsb=89.0, wnli=53.5)),
    "DistilBERT": (77.0, dict(cola=51.3, mnli=82.2, mrpc=87.5, qnli=89.2, qqp=88.5, rte=59.9, sst2=91.3, stsb=86.9, wnli=56.3)),
}


def test_glue_score_recomputes_the_papers_scores():
    for model in ("ELMo", "DistilBERT"):
        printed, row = PAPER_ROWS[model]
        assert round(M.glue_score(row), 1) == printed
    # the paper's BERT row averages to 79.7, not the printed 79.5 (documented in lib.metrics)
    printed, row = PAPER_ROWS["BERT-base"]
    assert round(M.glue_score(row), 1) == 79.7 != printed


def test_glue_score_takes_metric_dicts_and_uses_each_tasks_score():
    per_task = {"mrpc": M.glue_metrics("mrpc", [1, 1, 0, 1, 0], [1, 0, 1, 1, 0]),  # score 63.33
                "cola": M.glue_metrics("cola", [1, 1, 1, 1], [1, 0, 1, 0])}        # score 0
    assert M.glue_score(per_task) == pytest.approx((60 + 200 / 3) / 4)


def test_normalize_answer_official_order():
    assert M.normalize_answer("  The Cat, sat!  ") == "cat sat"
    assert M.normalize_answer("An apple a day") == "apple day"
    assert M.normalize_answer("theory of the atom") == "theory of atom"  # whole words only
    # punctuation goes before articles: "the-cat" becomes one word "thecat"
    assert M.normalize_answer("the-cat") == "thecat"


def test_squad_f1_and_exact_on_crafted_cases():
    assert M.squad_exact("the Denver Broncos.", "Denver Broncos") == 1.0
    # [big, cat] vs [cat, sat]: one common token, precision = recall = 1/2
    assert M.squad_f1("the big cat", "a cat sat") == pytest.approx(0.5)
    # [in, 1990] vs [1990]: precision 1/2, recall 1 -> F1 2/3
    assert M.squad_f1("in 1990", "1990") == pytest.approx(2 / 3)
    # repeated tokens count once per match
    assert M.squad_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert M.squad_f1("the", "a") == 0.0  # both normalize to nothing


def test_squad_em_f1_max_over_references_and_missing_predictions():
    references = {"q1": ["Denver Broncos", "The Denver Broncos"], "q2": ["1990", "the year 1990"], "q3": ["blue sky"]}
    predictions = {"q1": "denver broncos.", "q2": "in 1990"}  # q3 unanswered: counts as 0
    out = M.squad_em_f1(predictions, references)
    # q2: F1 vs "1990" = 2/3, vs "year 1990" = 1/2 -> max 2/3
    assert out["exact_match"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_median_and_spread():
    out = M.median_and_spread([3, 1, 2, 10])
    assert out["median"] == 2.5 and out["min"] == 1 and out["max"] == 10 and out["n"] == 4
    assert out["std"] == pytest.approx(math.sqrt(50 / 3))  # deviations from 4: 1, 9, 4, 36
    single = M.median_and_spread([7.0, float("nan")])
    assert single == {"median": 7.0, "min": 7.0, "max": 7.0, "std": 0.0, "n": 1}
    assert M.median_and_spread([])["n"] == 0
