"""The scorecard (lib.findings.scorecard), the resolution rule, the tasks that count, and the rule that smoke-scale
numbers never reach a non-smoke page: values against hand-computed ones on a small synthetic results tree."""
import pytest
from test_report import _run, _summary, _table3_row, _write

from lib import findings, paper, render, report, results

SENTINEL = 13.579  # a smoke-scale score no other number here can produce; its text must never leave smoke pages
MODELS = {"teacher": "runs/cpu/teacher", "student": "runs/cpu/student", "no-ce": "runs/cpu/no-ce",
          "undistilled": "runs/cpu/undistilled"}
BASE = {"alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0, "random_init": False, "run_name": "student",
        "undistilled_name": "undistilled"}


def _glue(root, profile, scores, single=(), majority=None, models=MODELS):
    """glue.json (summary) and its per-run files from {model: {task: [score per seed]}}; ``single``: (model, task)
    pairs whose every seed predicted one class; ``majority``: {task: majority-class rate}."""
    majority = majority or {}
    for model, per_task in scores.items():
        for task, values in per_task.items():
            for seed, value in enumerate(values, 1):
                constant = (model, task) in single
                counts = {"1": 100} if constant else {"0": 40, "1": 60}
                _run(root, profile, model, task, seed, score=value, metrics={"score": value},
                     single_class=constant, majority_rate=majority.get(task),
                     predictions={"validation": {"n": 100, "predicted_label_counts": counts, "majority_label": 1}})
    _write(root, profile, "glue", {"summary": _summary(scores), "runs": 1}, params={"models": models})


def _heldout(accuracy, n=2500, tokens=4096):
    return {"step": 40, "tokens": tokens, "mlm_accuracy": accuracy, "kl_to_teacher": 1.0 - accuracy, "n_tokens": n}


def _distill(root, profile, run="student", heldout=None, reference=None, **params):
    _write(root, profile, f"distill-{run}", {"teacher": "runs/x/teacher", "teacher_parameters": 20_000_000,
                                             "student_parameters": 10_000_000, "heldout": heldout,
                                             "heldout_curve": [_heldout(0.1, tokens=0), heldout] if heldout else None,
                                             "heldout_reference": reference},
           params={**BASE, "run_name": run, **params})


@pytest.fixture
def cpu_world(tmp_path):
    # SST-2: teacher 90 against a majority rate of 60 -> counts; RTE: teacher 55 against 52 -> does not;
    # CoLA: the teacher's MCC is 0 -> does not (a constant answer scores 0 there)
    _glue(tmp_path, "cpu", {
        "teacher": {"sst2": [88, 90, 92], "rte": [54, 55, 56], "cola": [0, 0, 0]},
        "student": {"sst2": [84, 86, 85], "rte": [52, 52, 52], "cola": [0, 0, 0]},
        "no-ce": {"sst2": [70, 71, 72], "rte": [52, 52, 52], "cola": [0, 0, 0]},
        "undistilled": {"sst2": [85, 84, 86], "rte": [52, 52, 52], "cola": [0, 0, 0]},
    }, single={("student", "rte"), ("no-ce", "rte"), ("undistilled", "rte"), ("teacher", "cola"),
               ("student", "cola"), ("no-ce", "cola"), ("undistilled", "cola")},
        majority={"sst2": 60.0, "rte": 52.0, "cola": 69.0})
    # held-out masked-token accuracy over 2,500 targets: student 40 %, no-ce 36 % (resolved: 2 SE = 2.75 pts),
    # mlm-only 39 % (not resolved), undistilled 20 %, teacher 50 %
    _distill(tmp_path, "cpu", heldout=_heldout(0.40),
             reference={"teacher": _heldout(0.50, tokens=None), "undistilled": _heldout(0.20, tokens=0)})
    _distill(tmp_path, "cpu", "no-ce", heldout=_heldout(0.36), alpha_ce=0.0)
    _distill(tmp_path, "cpu", "mlm-only", heldout=_heldout(0.39), alpha_ce=0.0, alpha_cos=0.0)
    _write(tmp_path, "cpu", "latency", {"table3": [_table3_row("BERT-base", 100.0, 300, 110.0),
                                                   _table3_row("DistilBERT", 70.0, 300, 66.0)], "sweep": []})
    return tmp_path


def _plant_smoke(root):
    """A smoke tree whose every score is SENTINEL, with every stage's file, so that a leak would show."""
    _glue(root, "smoke", {m: {"sst2": [SENTINEL] * 3} for m in ("teacher", "student", "no-ce", "undistilled")},
          majority={"sst2": 1.0})
    _distill(root, "smoke")
    _distill(root, "smoke", "no-ce", alpha_ce=0.0)
    down = _summary({"teacher": {"imdb": [SENTINEL, SENTINEL]}, "student": {"imdb": [SENTINEL, 2 * SENTINEL]}})
    _write(root, "smoke", "imdb_squad", {"summary": down, "runs": 4})
    _write(root, "smoke", "latency", {"table3": [_table3_row("BERT-base", SENTINEL, 3, SENTINEL),
                                                 _table3_row("DistilBERT", 2 * SENTINEL, 3, 2 * SENTINEL)],
                                      "sweep": []})


def test_resolved_is_the_larger_seed_range():
    assert report.resolved(2.1, 1.0, 2.0) is True
    assert report.resolved(-2.0, 1.0, 2.0) is False  # equal to the noise: not resolved
    assert report.resolved(-2.5, None, 2.0) is True
    assert report.resolved(5.0, None, None) is None  # single seeds: no noise, no verdict
    assert report.resolved(None, 1.0) is None


def test_counted_tasks_need_the_teacher_five_points_above_the_floor(cpu_world):
    counted, excluded = report.counted_tasks("cpu", root=cpu_world)
    assert counted == ["sst2"]
    assert set(excluded) == {"cola", "rte"}
    assert "55.0 against a floor of 52.0" in excluded["rte"]
    assert "CoLA: teacher 0.0 against a floor of 0.0" in excluded["cola"]
    # MRPC's floor (acc/F1) for a majority rate of 68 % on the positive class: (68 + 100 * 2*0.68/1.68) / 2
    assert report._constant_score("mrpc", 68.0, 1) == pytest.approx((68 + 100 * 1.36 / 1.68) / 2)
    assert report._constant_score("qqp", 63.0, 0) == pytest.approx(31.5)


def test_floor_from_single_class_runs_when_the_rate_was_not_recorded(tmp_path):
    _glue(tmp_path, "cpu", {"teacher": {"rte": [60, 61, 62]}, "student": {"rte": [53, 52.7, 52.7]}},
          single={("student", "rte")})
    assert report.task_floors("cpu", root=tmp_path)["rte"][0] == pytest.approx(53)
    assert report.counted_tasks("cpu", root=tmp_path)[0] == ["rte"]


def test_seed_noise_leaves_out_single_class_runs(cpu_world):
    # ranges of the pairs with no single-class seed: teacher sst2 4, rte 2; student sst2 2; no-ce sst2 2;
    # undistilled sst2 2 -> median 2 (the zero ranges of the constant RTE and CoLA runs would give 0)
    assert report.task_noise("cpu", root=cpu_world) == 2


def test_scale_findings_reads_each_fact_from_its_file(cpu_world):
    _write(cpu_world, "cpu", "teacher", {"mlm_before": {"mlm_accuracy": 0.0, "loss": 10.5, "n_tokens": 8290},
                                         "mlm_after": {"mlm_accuracy": 0.14, "loss": 6.1, "n_tokens": 8290}},
           wall=400.0)
    facts = findings.scale_findings("cpu", root=cpu_world)
    assert facts["teacher_mlm_before"] == 0.0
    assert facts["teacher_mlm_after"] == pytest.approx(14.0)
    assert (facts["teacher_mlm_loss"], facts["teacher_mlm_tokens"]) == (6.1, 8290)
    # wall time: every stage file of the profile, summed (glue 12.5, three distill runs 12.5 each, latency 12.5)
    assert facts["wall_time_s"] == pytest.approx(400.0 + 5 * 12.5)
    assert findings.scale_findings("t4", root=cpu_world)["teacher_mlm_tokens"] is None


def test_run_setup_names_the_mlm_only_run_apart_from_the_table4_ablations(cpu_world):
    distill = findings.run_setup("cpu", cpu_world)["distill"]
    assert distill["mlm_only"] == ["mlm-only"] and distill["ablations"] == {"no-ce": "without L_ce (distillation)"}


def test_scorecard_rows_and_verdicts(cpu_world):
    card = findings.scorecard(cpu_world).set_index("claim")
    glue_row = card.loc[f"retains {paper.CLAIM['glue_retained_percent']} % of the teacher's GLUE score"]
    # SST-2 only: student 85 / teacher 90; the paper's SST-2 retention 91.3 / 92.7; noise 4 / 90 points
    assert glue_row["measured"] == f"{100 * 85 / 90:.1f} % (SST-2)"
    assert glue_row["paper (reference)"] == f"{100 * 91.3 / 92.7:.1f} % (same tasks)"
    assert glue_row["noise"] == f"{100 * 4 / 90:.1f} pts" and glue_row["scale"] == "cpu"
    # 4.1 points below the paper's, within the 4.4-point noise, and that noise exceeds the paper's 1.5-point loss
    assert glue_row["verdict"] == findings.UNRESOLVED
    assert glue_row["floor"] == f"constant answer {100 * 60 / 90:.1f} %; undistilled {100 * 85 / 90:.1f} %"
    ablation = card.loc["Table 4: without L_ce (distillation)"]
    # -14 points, resolved (ranges 2), but 11 points from the paper's -2.96: the sign only
    assert ablation["measured"] == "-14.0 pts (SST-2)" and ablation["verdict"] == findings.SAME_SIGN
    assert ablation["paper (reference)"] == "-3.0 pts (9 tasks)"
    assert card.loc["Table 4: without L_cos (cosine)", "verdict"] == findings.NOT_RUN
    init = card.loc["distillation adds to the teacher-layer initialisation (distilled - undistilled)"]
    assert init["measured"] == "+0.0 pts (SST-2)" and init["verdict"] == findings.UNRESOLVED
    params = card.filter(like="fewer parameters", axis=0).iloc[0]
    assert params["measured"] == f"{100 * 66 / 110:.1f} %" and params["verdict"] == findings.CONFIRMED
    assert params["scale"] == "cpu (paper's shapes)" and "DistilBERT / BERT-base shapes" in params["note"]
    time = card.filter(like="faster", axis=0).iloc[0]
    assert time["measured"] == "70.0 %" and time["verdict"] == findings.CONTRADICTED  # 70 > 61.4 + 5
    assert time["noise"] == findings.TIME_RULE.bound() == "+5 pts (one-sided)"
    assert card.loc["SQuAD 1.1 F1 retained", "verdict"] == findings.NOT_RUN
    # held-out notes: no-ce - student = -4.0 pts, 2 SE = 2 * 100 * sqrt(.36 * .64 / 2500 + .4 * .6 / 2500)
    bound = 200 * (0.36 * 0.64 / 2500 + 0.4 * 0.6 / 2500) ** 0.5
    assert f"held-out masked-token accuracy -4.0 pts (2 SE {bound:.1f}: resolved" in ablation["note"]
    assert "held-out masked-token accuracy +20.0 pts" in init["note"]  # student 40 % - undistilled 20 %
    alone = card.loc["the teacher's signal adds to masked-LM training alone (distilled - MLM loss only)"]
    assert alone["verdict"] == findings.NOT_RUN  # mlm-only was distilled but not fine-tuned on GLUE
    assert "held-out masked-token accuracy +1.0 pts" in alone["note"] and "not resolved" in alone["note"]
    html = render.scorecard_html(findings.scorecard(cpu_world))
    assert html.count('href="table4_ablation.html"') == 6 and report.RESOLUTION_RULE[:40] in html


def test_heldout_table_changes_and_rule(cpu_world):
    table = report.heldout_table("cpu", root=cpu_world)
    assert list(table["model"]) == ["teacher", "undistilled", "mlm-only", "no-ce", "student"]
    row = table.set_index("model").loc["no-ce"]
    assert row.name == "no-ce" and row["accuracy change (points)"] == pytest.approx(-4.0)
    assert row["2 SE (points)"] == pytest.approx(200 * (0.36 * 0.64 / 2500 + 0.4 * 0.6 / 2500) ** 0.5)
    assert row["resolved"] == "yes"
    assert table.set_index("model").loc["mlm-only", "resolved"] == "no"
    # tokens seen is a count: whole numbers, and missing (not 0) for the teacher, which was never distilled
    assert str(table["tokens seen"].dtype) == "Int64" and table.set_index("model")["tokens seen"]["no-ce"] == 4096
    assert table.set_index("model")["tokens seen"].isna()["teacher"]
    assert list(table.index)[:3] == ["teacher (KL 0 by definition)", "no distillation at all (teacher-layer init only)",
                                     "no teacher signal (MLM loss only)"]
    curves, reference = report.heldout_curves("cpu", root=cpu_world)
    assert set(curves) == {"student", "no-ce", "mlm-only"} and set(reference) == {"teacher", "undistilled"}
    assert report.heldout_table("smoke", root=cpu_world) is None


def test_no_smoke_number_reaches_a_non_smoke_page(cpu_world):
    _plant_smoke(cpu_world)
    sentinel = f"{SENTINEL:.1f}"  # how the tables would print it
    outputs = [render.scorecard_html(findings.scorecard(cpu_world)), findings.headline(cpu_world).to_string()]
    outputs.append(findings.scorecard(cpu_world).to_string())
    assert "smoke" not in findings.headline(cpu_world).columns
    assert set(findings.scorecard(cpu_world)["scale"]) <= {"cpu", "cpu (paper's shapes)", "\u2014"}
    for text in outputs:
        assert sentinel not in text and str(SENTINEL) not in text


def test_smoke_alone_gives_no_verdict(tmp_path):
    _plant_smoke(tmp_path)
    card = findings.scorecard(tmp_path)
    assert set(card["verdict"]) == {findings.NOT_RUN}
    assert list(findings.headline(tmp_path).columns) == ["paper"]


def test_table4_and_table1_use_the_counted_tasks_and_the_rule(cpu_world):
    table = report.ablation_table("cpu", cpu_world)
    row = table.loc["without L_ce (distillation)"]
    # SST-2 only: no-ce 71 against the student's 85; seed ranges 2 and 2 -> resolved
    assert row["change (points)"] == pytest.approx(-14) and row["seed range (points)"] == 2
    assert row["resolved"] == "yes"
    init = table.loc["no distillation at all (teacher-layer init only)"]
    assert init["change (points)"] == pytest.approx(0) and init["resolved"] == "no"
    glue = report.glue_table(report.load("cpu", "glue", root=cpu_world), exclude=["no-ce"], profile="cpu",
                             root=cpu_world)
    floor = glue.loc[("this run", report.FLOOR_ROW)]
    assert floor["SST-2 acc"] == 60 and floor["RTE acc"] == 52 and floor["GLUE score"] == 60
    assert glue.loc[("this run", "teacher"), "GLUE score"] == 90  # SST-2 only: CoLA's and RTE's are left out
    assert glue.loc[("paper", "DistilBERT"), "GLUE score"] == paper.TABLE1["DistilBERT"]["sst2"]


def test_an_mlm_only_run_is_no_table4_ablation_but_its_own_row():
    base = {"alpha_ce": 5.0, "alpha_mlm": 2.0, "alpha_cos": 1.0, "alpha_mse": 0.0}
    assert report.classify_run({**base, "alpha_ce": 0.0}, base) == "without L_ce (distillation)"
    assert report.classify_run({**base, "alpha_ce": 0.0, "alpha_cos": 0.0}, base) is None
    assert report.mlm_only({**base, "alpha_ce": 0.0, "alpha_cos": 0.0}) and not report.mlm_only(base)
    assert not report.mlm_only({**base, "alpha_ce": 0.0, "alpha_cos": 0.0, "alpha_mlm": 0.0, "alpha_mse": 1.0})


# ------------------------------------------------------------------------------------------- verdict boundaries

def test_speed_rule_is_one_sided_and_says_so(cpu_world):
    paper_ratio = report.paper_time_ratio()
    rule = findings.TIME_RULE
    assert rule.verdict(paper_ratio - 11, paper_ratio) == findings.CONFIRMED  # 11 points faster: at least as fast
    assert rule.verdict(paper_ratio + 4.9, paper_ratio) == findings.CONFIRMED
    assert rule.verdict(paper_ratio + 5.1, paper_ratio) == findings.CONTRADICTED
    text = rule.text()
    assert f"plus {rule.tolerance:g} points" in text and "however far below" in text and text in findings.VERDICT_RULES
    # the whole scorecard on a timing 11 points faster than the paper's ratio
    seconds = 100 * (paper_ratio - 11) / 100
    _write(cpu_world, "cpu", "latency", {"table3": [_table3_row("BERT-base", 100.0, 300, 110.0),
                                                   _table3_row("DistilBERT", seconds, 300, 66.0)], "sweep": []})
    time = findings.scorecard(cpu_world).set_index("claim").filter(like="faster", axis=0).iloc[0]
    assert time["verdict"] == findings.CONFIRMED and "-11.0 pts against the paper's ratio" in time["note"]


def test_parameter_rule_is_two_sided():
    rule = findings.PARAMS_RULE
    assert rule.verdict(60.9, 60.0) == rule.verdict(59.1, 60.0) == findings.CONFIRMED
    assert rule.verdict(61.1, 60.0) == rule.verdict(58.9, 60.0) == findings.CONTRADICTED
    assert "within 1 point of the paper's ratio on either side" in rule.text() and rule.bound() == "\u00b11 pt"


def test_retention_rule_just_inside_and_just_outside_the_noise():
    rule, reference, noise = findings.RETENTION_RULE, 98.0, 1.5  # noise below the paper's 2-point loss
    assert rule.verdict(reference - 1.4, reference, noise, "paper") == findings.CONFIRMED
    assert rule.verdict(reference - 1.6, reference, noise, "paper") == findings.CONTRADICTED
    # a scale whose teacher and budget are not the paper's: below by more than the noise is not reached, never
    # contradicted
    assert rule.verdict(reference - 1.6, reference, noise, "cpu") == findings.NOT_REACHED
    assert rule.verdict(reference - 1.4, reference, noise, "cpu") == findings.CONFIRMED
    assert rule.verdict(reference - 1.4, reference, 2.5, "cpu") == findings.UNRESOLVED  # noisier than the claim
    assert rule.verdict(None, reference, noise, "cpu") == findings.UNRESOLVED
    assert f"({', '.join(rule.paper_like)})" in rule.text() and findings.NOT_REACHED in rule.text()


def test_change_rule_tells_a_sign_only_match_from_a_confirmation():
    rule = findings.CHANGE_RULE
    # Table 4's random initialisation at cpu scale: -10.7 against the paper's -3.69, seed range 1.3
    assert rule.verdict(-10.7, 1.3, -3.69) == findings.SAME_SIGN
    assert rule.verdict(-3.0, 1.3, -3.69) == findings.CONFIRMED  # within the noise of the paper's change
    assert rule.verdict(-1.2, 1.3, -3.69) == findings.UNRESOLVED  # inside the noise: not resolved
    assert rule.verdict(+2.0, 1.3, -3.69) == findings.CONTRADICTED  # resolved, the other sign
    assert rule.verdict(+2.0, None, -3.69) == findings.UNRESOLVED  # a single seed: no noise
    assert rule.verdict(+2.0, 1.3, sign=1) == findings.CONFIRMED  # a sign the paper only implies
    assert f"'{findings.SAME_SIGN}'" in rule.text() and rule.text() in findings.VERDICT_RULES


def test_the_table4_page_and_the_scorecard_give_one_verdict(cpu_world):
    table = report.ablation_table("cpu", cpu_world)
    verdicts = dict(zip(table.index, findings.ablation_verdicts(table)))
    card = findings.scorecard(cpu_world).set_index("claim")
    assert verdicts["without L_ce (distillation)"] == card.loc["Table 4: without L_ce (distillation)", "verdict"]
    init = card.loc["distillation adds to the teacher-layer initialisation (distilled - undistilled)", "verdict"]
    assert verdicts[report.UNDISTILLED_LABEL] == init


def test_a_cpu_retention_below_the_paper_is_not_reached_with_its_value(cpu_world):
    # the student far below the teacher on SST-2, with little noise: resolved below the paper's retention
    _glue(cpu_world, "cpu", {"teacher": {"sst2": [89, 90, 91]}, "student": {"sst2": [59, 60, 61]},
                             "undistilled": {"sst2": [58, 59, 60]}}, majority={"sst2": 50.0})
    row = findings.scorecard(cpu_world).set_index("claim").iloc[0]
    assert row["verdict"] == findings.NOT_REACHED and row["measured"] == f"{100 * 60 / 90:.1f} % (SST-2)"


# ------------------------------------------------------------------------------------------- known derived figures

# A cpu GLUE run whose derived figures are known by hand. SST-2 (majority rate 50) and STS-B (floor 0) count; RTE
# (teacher 51 against a majority rate of 52.7) does not. Medians: teacher 90 / 60 -> GLUE 75; student 80 / 40 -> 60;
# undistilled 78 / 36 -> 57; no-ce 70 / 30 -> 50. The seeds are uneven, so a median of per-seed macro scores
# (undistilled: 56.5) differs from the macro of per-task medians (57): a page using the other would show.
KNOWN_SCORES = {
    "teacher": {"sst2": [88, 90, 92], "stsb": [58, 60, 62], "rte": [50, 51, 52]},
    "student": {"sst2": [79, 80, 81], "stsb": [39, 40, 41], "rte": [52, 52, 53]},
    "undistilled": {"sst2": [76, 78, 79], "stsb": [37, 36, 30], "rte": [52, 52, 53]},
    "no-ce": {"sst2": [69, 70, 71], "stsb": [30, 30, 30], "rte": [52, 52, 53]},
}
KNOWN = {"tasks": "SST-2, STS-B", "retention": "80.0", "undistilled retention": "76.0", "gain": "+3.0",
         "no-ce change": "-10.0", "teacher score": "75.0", "student score": "60.0", "undistilled score": "57.0"}


def plant_known_figures(root):
    """Overwrite results/cpu/glue.json and its per-run files with KNOWN_SCORES (the rest of the cpu tree stays)."""
    _glue(root, "cpu", KNOWN_SCORES, majority={"sst2": 50.0, "rte": 52.7})
    return root


def plant_budget_rule(root):
    """The cpu tree's records of the budget rules (issue 23): the teacher's adaptation curves (top 6 layers kept, at
    step 250), a GLUE budget ladder (RTE: 1,000 rows miss the target, 1,990 reach it) and the student's held-out
    learning curve (+0.5 points over its last quarter)."""
    import json
    curve = lambda top: [{"step": s, "mlm_accuracy": a, "perplexity": 1.0, "loss": 1.0}  # noqa: E731
                         for s, a in zip((0, 100, 200, 250, 300), top)]
    adaptation = {"runs": [{"top_layers": 2, "curve": curve((0.0, 0.20, 0.24, 0.25, 0.25)), "best_step": 300,
                            "best_accuracy": 0.25, "wall_time_s": 100.0, "trainable_parameters": 4_000_000},
                           {"top_layers": 6, "curve": curve((0.0, 0.26, 0.31, 0.33, 0.32)), "best_step": 250,
                            "best_accuracy": 0.33, "wall_time_s": 200.0, "trainable_parameters": 11_000_000}],
                  "chosen": {"top_layers": 6, "step": 250, "selection_accuracy": 0.33}, "selection_sequences": 512,
                  "eval_every": 50}
    for name, key, value in (("teacher", "adaptation", adaptation),
                             ("glue", "budget", {"rte": {"chosen": 2000, "passed": True, "heldout_rows": 500,
                                                         "margin": 7.0, "stated_target": None, "rungs": [
        {"max_train_samples": 1000, "train_examples": 1000, "n_epoch": 3, "heldout_score": 55.0, "floor": 50.4,
         "target": 57.4, "passed": False, "train_seconds": 90.0, "record": "x"},
        {"max_train_samples": 2000, "train_examples": 1990, "n_epoch": 3, "heldout_score": 61.2, "floor": 50.4,
         "target": 57.4, "passed": True, "train_seconds": 180.0, "record": "y"}]}}),
                             ("distill-student", "heldout_curve", [_heldout(a, tokens=s * 2048) | {"step": s, "loss": 3.0}
                              for s, a in ((0, 0.10), (200, 0.25), (400, 0.30), (600, 0.33), (800, 0.335))])):
        path = root / "cpu" / f"{name}.json"
        data = json.loads(path.read_text())
        data[key] = value
        results.write(path, results.as_record(data, results.kind_of(path)))
    for path in (root / "cpu").glob("distill-*.json"):  # the models measured beside them, as stage 2 records them
        data = json.loads(path.read_text())
        data["heldout_reference"] = {model: _heldout(a, tokens=None) | {"step": 0, "loss": 3.0}
                                     for model, a in (("teacher", 0.32), ("undistilled", 0.10))}
        results.write(path, results.as_record(data, results.kind_of(path)))
    return root


def test_known_figures_by_hand(tmp_path):
    from test_report import write_example_results
    root = plant_known_figures(write_example_results(tmp_path))
    assert report.counted_glue_retention("cpu", root)[:2] == (pytest.approx(80.0), ["sst2", "stsb"])
    assert report.counted_glue_retention("cpu", root, student="undistilled")[0] == pytest.approx(76.0)
    change, noise, _ = report.counted_glue_change("cpu", "student", "undistilled", root)
    assert (change, noise) == (pytest.approx(3.0), pytest.approx(2.5))  # undistilled seeds 56.5, 57, 54.5
    card = findings.scorecard(root).set_index("claim")
    init = card.loc["distillation adds to the teacher-layer initialisation (distilled - undistilled)"]
    assert init["measured"] == "+3.0 pts (SST-2, STS-B)" and init["verdict"] == findings.CONFIRMED
    no_ce = card.loc["Table 4: without L_ce (distillation)"]
    assert no_ce["measured"] == "-10.0 pts (SST-2, STS-B)" and no_ce["verdict"] == findings.SAME_SIGN


def test_ablations_on_a_shorter_budget_are_judged_against_the_triple_loss_run_of_that_budget(cpu_world):
    # the main run trains 800 steps; no-cos and its reference triple-loss-200 train 200: no-cos is 1 point under
    # its reference (not resolved) though 8 points under the 800-step student
    _distill(cpu_world, "cpu", heldout=_heldout(0.40), max_steps=800,
             reference={"teacher": _heldout(0.50, tokens=None), "undistilled": _heldout(0.20, tokens=0)})
    _distill(cpu_world, "cpu", "triple-loss-200", heldout=_heldout(0.33), max_steps=200)
    _distill(cpu_world, "cpu", "no-cos", heldout=_heldout(0.32), alpha_cos=0.0, max_steps=200)
    runs = report.distill_runs("cpu", root=cpu_world)
    assert report.same_budget_base(runs, "no-cos") == "triple-loss-200"
    assert report.same_budget_base(runs, "triple-loss-200") == "student"  # its own budget has no other reference
    assert report.same_budget_base(runs, "no-ce") == "student"  # no max_steps recorded: as the main run's
    table = report.heldout_table("cpu", root=cpu_world).set_index("model")
    assert table.loc["no-cos", "change against"] == "triple-loss-200"
    assert table.loc["no-cos", "accuracy change (points)"] == pytest.approx(-1.0)
    assert table.loc["no-cos", "resolved"] == "no"
    assert table.loc["triple-loss-200", "accuracy change (points)"] == pytest.approx(-7.0)
    card = findings.scorecard(root=cpu_world).set_index("claim")
    assert "-1.0 pts" in card.loc["Table 4: without L_cos (cosine)", "note"]


def test_the_budget_table_lists_every_rung_tried_and_marks_the_chosen_one():
    from types import SimpleNamespace
    rung = dict(n_epoch=3, floor=50.0, target=55.0)
    budget = {"rte": {"chosen": 2000, "rungs": [
        {**rung, "max_train_samples": 1000, "train_examples": 1000, "heldout_score": 53.0, "passed": False},
        {**rung, "max_train_samples": 2000, "train_examples": 1990, "heldout_score": 58.5, "passed": True}]}}
    table = report.budget_table(SimpleNamespace(budget=budget))
    assert list(table.index) == [("RTE", 1000), ("RTE", 1990)]
    assert list(table["reached"]) == ["no", "yes"] and list(table["chosen"]) == ["", "yes"]
    assert report.budget_table(SimpleNamespace(budget=None)) is None


def test_late_gain_reads_the_last_quarter_of_a_learning_curve():
    curve = [{"step": step, "mlm_accuracy": acc} for step, acc in ((0, 0.10), (200, 0.20), (400, 0.25), (600, 0.28),
                                                                  (700, 0.29), (800, 0.292))]
    gain, start, end = report.late_gain(curve)
    assert (start, end) == (600, 800) and gain == pytest.approx(1.2)
    assert report.late_gain(curve, share=0.5)[1] == 400
    assert report.late_gain(curve[:1]) is None
