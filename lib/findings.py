"""What the results say about each claim of the paper: the intro's scorecard (one row per claim, with a verdict),
the headline table, and one scale's findings (the CPU-scale page). Built on lib.report's tables and its rules
(resolved, counted_tasks, the seed noise); every number is read from results files or lib.paper, none typed here.
"""
from dataclasses import dataclass

from lib import config, paper, report, results
from lib.tasks import IMDB, SQUAD  # Table 2's tasks
from lib.report import (  # noqa: F401
    GLUE_SCORE,
    REAL_SCALES,
    _ablation_kinds,
    _glue_label_for,
    _mean,
    _run_params,
    _single_class_text,
    counted_glue_change,
    counted_glue_retention,
    counted_glue_score,
    counted_glue_seed_range,
    encoder_parameter_ratio,
    encoder_parameters_m,
    counted_tasks,
    distill_runs,
    downstream_retention,
    glue_scores,
    glue_tasks,
    heldout_measures,
    heldout_note,
    latency_models,
    latency_ratio,
    load,
    mlm_only_runs,
    model_paths,
    paper_downstream_retention,
    paper_glue_retention,
    paper_parameter_ratio,
    paper_time_ratio,
    profiles,
    resolved,
    retention_percent,
    same_budget_base,
    root_dir,
    seed_range,
    seed_scores,
    single_class_runs,
    spread,
    task_floors,
    task_noise,
    task_set_label,
)


# ------------------------------------------------------------------------------------------- headline (intro)

def headline(root=None):
    """The one-screen summary: per scale (columns), the claim's three ratios and the downstream retentions,
    each as a cell of text ('96.9 %' or 'not run') with what it compares in brackets; the paper's column first."""
    import pandas as pd
    rows = ["teacher -> student", "parameters: student / teacher", "GLUE score: student / teacher",
            "inference time: student / teacher", "IMDb accuracy: student / teacher", "SQuAD F1: student / teacher"]
    pd_ret = paper_downstream_retention()
    columns = {"paper": [
        f"{paper.BERT_BASE} -> {paper.DISTILBERT}",
        _pct(paper_parameter_ratio(), f"{paper.DISTILBERT} / {paper.BERT_BASE}, {NO_HEAD}"),
        _pct(paper_glue_retention()[GLUE_SCORE], f"{len(paper.GLUE_TASKS)} tasks"),
        _pct(paper_time_ratio(), f"{paper.DISTILBERT} / {paper.BERT_BASE}"), _pct(pd_ret["imdb_accuracy"]),
        _pct(pd_ret["squad_f1"])]}
    for profile in profiles(root):
        if profile != "smoke":  # the smoke scale checks the pipeline: never beside the paper (its own pages show it)
            columns[profile] = _headline_column(profile, root)
    return pd.DataFrame(columns, index=pd.Index(rows, name="measure"))


NO_HEAD = "without MLM head"  # what every parameter count of the book counts (report.encoder_parameters_m)


def _pct(value, note=None):
    if value is None:
        return "not run"
    return f"{value:.1f} %" + (f" ({note})" if note else "")


def _teacher_name(profile, root):
    runs = distill_runs(profile, root)
    run = runs.get(paper.STUDENT) or next(iter(runs.values()), None)
    if not run:
        return None
    stage1 = load(profile, config.TEACHER, root)
    if stage1 and run.teacher.startswith(("runs/", "{run_dir}")):  # a teacher stage 1 saved: name its origin
        return f"{stage1.teacher} (stage 1)"
    return run.teacher


def _headline_column(profile, root):
    teacher = _teacher_name(profile, root)
    size = encoder_parameters_m(profile, paper.STUDENT, root)
    pair = "not run" if teacher is None else (
        f"{teacher} -> {size:.1f}M-parameter student ({NO_HEAD})" if size else f"{teacher} -> student")
    params = encoder_parameter_ratio(profile, paper.STUDENT, paper.TEACHER, root)
    glue = load(profile, config.GLUE, root)
    glue_ret, counted, same_tasks = counted_glue_retention(profile, root)
    glue_text = (_pct(glue_ret, f"{task_set_label(counted)}; paper on the same: {same_tasks:.1f} %")
                 if glue_ret is not None else ("no task counts" if glue else "not run"))
    latency = load(profile, config.LATENCY, root)
    ratio = latency_ratio(latency) if latency else None
    time_text = _pct(ratio[2], f"{ratio[0]} / {ratio[1]}") if ratio else "not run"
    down = load(profile, config.IMDB_SQUAD, root)
    down_ret = downstream_retention(down) if down else {}
    return [pair, _pct(params, f"{paper.STUDENT} / {paper.TEACHER}, {NO_HEAD}"), glue_text, time_text,
            _pct(down_ret.get("imdb_accuracy")), _pct(down_ret.get("squad_f1"))]


# ------------------------------------------------------------------------------------------- one scale's findings

def glue_gap(record, teacher=paper.TEACHER, student=paper.STUDENT, tasks=None):
    """{task: points} each task adds to the teacher-minus-student GLUE score over ``tasks`` (default: every task
    run; the book passes the counted ones) (its score gap / number of tasks); the values sum to the gap of the
    macro scores. {} when either model is missing."""
    scores = glue_scores(record)
    if teacher not in scores or student not in scores:
        return {}
    tasks = list(tasks) if tasks is not None else glue_tasks(record)
    return {t: (scores[teacher][t] - scores[student][t]) / len(tasks) for t in tasks
            if None not in (scores[teacher][t], scores[student][t])}


def single_class_models(profile, name=config.GLUE, root=None):
    """{task: [models]} for the classification runs in results/<profile>/<name>/ where every seed predicted one
    label for the whole evaluation set: a model that learned nothing beyond a constant answer (MCC 0 on CoLA)."""
    constant = {}
    for run in results.read_runs(root_dir(root) / profile / name):
        counts = [split.get("predicted_label_counts") for split in run.predictions.values()]
        if not counts or None in counts:  # regression (STS-B) or no prediction summary
            continue
        key = (run.task, run.model)
        constant[key] = constant.get(key, True) and all(len(c) == 1 for c in counts)
    found = {}
    for (task, model), always in sorted(constant.items()):
        if always:
            found.setdefault(task, []).append(model)
    return found


def stage_wall_times(profile, root=None):
    """{results name: wall time in s} of a profile's results files (the distillation runs one by one)."""
    names = [config.TEACHER, *[config.DISTILL_RESULTS_PREFIX + r for r in distill_runs(profile, root)], config.GLUE,
             config.IMDB_SQUAD, config.LATENCY]
    return {name: rec.wall_time_s for name in names if (rec := load(profile, name, root)) is not None}


def scale_findings(profile, root=None):
    """The facts a scale's findings page states, each read from a results file (None: not run): the teacher's
    masked-LM accuracy, what the student saw, retention of GLUE / IMDb / inference time beside the paper's, the
    undistilled baseline, the seed noise and the total wall time."""
    facts = {}
    stage1 = load(profile, config.TEACHER, root)
    facts["teacher"] = stage1.teacher if stage1 else None
    for when in ("before", "after"):
        accuracy = getattr(stage1, f"mlm_{when}").get("mlm_accuracy") if stage1 else None
        facts[f"teacher_mlm_{when}"] = 100 * accuracy if accuracy is not None else None
    check = (stage1.mlm_after or stage1.mlm_before) if stage1 else {}  # the last masked-LM check stage 1 ran
    facts["teacher_mlm_loss"], facts["teacher_mlm_tokens"] = check.get("loss"), check.get("n_tokens")
    run = distill_runs(profile, root).get(paper.STUDENT)
    facts["distill_tokens"] = run.tokens if run else None
    facts["distill_steps"] = run.steps if run else None
    loss_curve = run.loss_curve if run else []
    curve = [r["loss"] for r in loss_curve if r.get("loss") is not None]
    facts["loss_first"], facts["loss_last"] = (curve[0], curve[-1]) if curve else (None, None)
    mlm = [r["loss_mlm"] for r in loss_curve if r.get("loss_mlm") is not None]
    facts["student_mlm_first"], facts["student_mlm_last"] = (mlm[0], mlm[-1]) if mlm else (None, None)
    quarter = max(1, len(curve) // 4)  # mean of the last quarter of the curve against the quarter before it
    facts["loss_still_falling"] = (sum(curve[-quarter:]) < sum(curve[-2 * quarter:-quarter])
                                   if len(curve) >= 2 * quarter + 1 and len(curve) >= 4 else None)
    facts["parameters"] = encoder_parameter_ratio(profile, paper.STUDENT, paper.TEACHER, root)
    facts["parameters_shapes"] = encoder_parameter_ratio(profile, paper.DISTILBERT, paper.BERT_BASE, root)
    facts["student_parameters_m"] = encoder_parameters_m(profile, paper.STUDENT, root)
    glue = load(profile, config.GLUE, root)
    facts["glue_run_tasks"] = glue_tasks(glue) if glue else []
    facts["glue_student"], facts["glue_tasks"], facts["glue_paper"] = counted_glue_retention(profile, root)
    facts["glue_excluded"] = counted_tasks(profile, root=root)[1] if glue else {}
    facts["glue_undistilled"] = counted_glue_retention(profile, root, student=_undistilled(profile, root))[0]
    facts["glue_gain"], facts["glue_gain_noise"], _ = counted_glue_change(profile, paper.STUDENT,
                                                                          _undistilled(profile, root), root)
    facts["glue_teacher_score"] = counted_glue_score(profile, paper.TEACHER, root)[0]
    facts["seed_noise"] = task_noise(profile, root=root) if glue else None
    down = load(profile, config.IMDB_SQUAD, root)
    facts["imdb_student"] = downstream_retention(down).get("imdb_accuracy") if down else None
    facts["imdb_undistilled"] = (downstream_retention(down, student="undistilled").get("imdb_accuracy")
                                 if down else None)
    latency = load(profile, config.LATENCY, root)
    timed = latency_models(latency) if latency else {}
    facts["time_architecture"] = retention_percent((timed.get(paper.DISTILBERT) or {}).get("seconds"),
                                                   (timed.get(paper.BERT_BASE) or {}).get("seconds"))
    facts["time_trained"] = retention_percent((timed.get(paper.STUDENT) or {}).get("seconds"),
                                              (timed.get(paper.TEACHER) or {}).get("seconds"))
    walls = stage_wall_times(profile, root)
    facts["wall_time_s"] = sum(w for w in walls.values() if w) if walls else None
    return facts


def run_setup(profile, root=None):
    """What a scale ran, read from its results files (each records its parameters): {stage: facts}, a stage
    absent when its results file is."""
    setup = {}
    stage1 = load(profile, config.TEACHER, root)
    if stage1:
        params = _run_params(stage1)
        setup[config.TEACHER] = {"id": stage1.teacher, "layers": stage1.layers, "hidden_size": stage1.hidden_size,
                                 "adapted": stage1.adapted, "had_mlm_head": stage1.had_mlm_head,
                                 "adapt_steps": params.get("adapt_steps"),
                                 "adapt_top_layers": params.get("adapt_top_layers"), "adaptation": stage1.adaptation}
    runs = distill_runs(profile, root)
    if paper.STUDENT in runs:
        params = _run_params(runs[paper.STUDENT])
        setup[config.DISTILL] = {"student_layers": runs[paper.STUDENT].student_layers,
                            **{k: params.get(k) for k in (*config.DistillParams.weight_names(), "temperature",
                                                         "undistilled_name")},
                            "corpus": [c.get("id") or c.get("path") for c in params.get("corpus") or []],
                            "ablations": _ablation_kinds(runs, paper.STUDENT), "mlm_only": mlm_only_runs(runs),
                            "max_steps": {name: _run_params(rec).get("max_steps") for name, rec in runs.items()},
                            "reference": {name: same_budget_base(runs, name) for name in runs}}
    for name in (config.GLUE, config.IMDB_SQUAD):
        record = load(profile, name, root)
        if record:
            params = _run_params(record)
            setup[name] = {k: params.get(k) for k in ("tasks", "seeds", "n_epoch", "learning_rate", "max_train_samples",
                                                      "max_eval_samples", "task_overrides", "imdb_max_length")}
            setup[name]["models"] = list(model_paths(record))
            setup[name]["budget"] = {task: entry["chosen"] for task, entry in (record.budget or {}).items()}
    latency = load(profile, config.LATENCY, root)
    if latency:
        setup[config.LATENCY] = {"models": list(latency_models(latency)),
                                 "max_examples": _run_params(latency).get("max_examples")}
    return setup


def _undistilled(profile, root=None):
    """The GLUE label of the undistilled student (the main run's undistilled_name), 'undistilled' by default."""
    runs = distill_runs(profile, root)
    name = _run_params(runs[paper.STUDENT]).get("undistilled_name") if paper.STUDENT in runs else None
    glue = load(profile, config.GLUE, root)
    return (_glue_label_for(name, glue) if (name and glue) else None) or "undistilled"


def findings_table(facts):
    """The findings of one scale beside the paper's, as a table (percent of the teacher), each row naming what it
    compares and over which tasks."""
    import pandas as pd
    pd_ret = paper_downstream_retention()
    tasks = task_set_label(facts["glue_tasks"])
    rows = [
        (f"parameters, our student / our teacher ({NO_HEAD})", facts["parameters"], paper_parameter_ratio()),
        (f"parameters, DistilBERT / BERT-base shapes ({NO_HEAD})", facts["parameters_shapes"],
         paper_parameter_ratio()),
        (f"GLUE score ({tasks}): distilled student / teacher", facts["glue_student"], facts["glue_paper"]),
        (f"GLUE score ({tasks}): undistilled student / teacher", facts["glue_undistilled"], None),
        ("IMDb accuracy: distilled student / teacher", facts["imdb_student"], pd_ret["imdb_accuracy"]),
        ("IMDb accuracy: undistilled student / teacher", facts["imdb_undistilled"], None),
        ("inference time, DistilBERT / BERT-base shapes", facts["time_architecture"], paper_time_ratio()),
        ("inference time, our student / our teacher", facts["time_trained"], None),
    ]
    return pd.DataFrame([{"measure": f"{m} (%)", "this run": ours, "paper": ref} for m, ours, ref in rows]
                        ).set_index("measure")


# ------------------------------------------------------------------------------------------- verdict rules

CONFIRMED, CONTRADICTED, UNRESOLVED, NOT_RUN = ("confirmed", "contradicted", "not resolved at this scale", "not run")
SAME_SIGN, NOT_REACHED = "same sign", "not reached at this scale"
WORDS = {"confirmed": CONFIRMED, "contradicted": CONTRADICTED, "unresolved": UNRESOLVED, "same_sign": SAME_SIGN,
         "not_reached": NOT_REACHED}


@dataclass(frozen=True)
class RetentionRule:
    """A retention (student / teacher) against the paper's on the same tasks, with the seed noise in points of
    retention. ``paper_like``: the scales whose teacher and budget are the paper's; only there can a retention
    below the paper's contradict it."""
    paper_like: tuple = ("paper",)
    template: str = (
        "Retention (student / teacher, against the paper's on the same tasks): below the paper's by more than the "
        "seed noise (points of retention) is '{contradicted}' at a scale with the paper's teacher and budget "
        "({scales}) and '{not_reached}' at any other, with its value; not below it by more than the noise is "
        "'{confirmed}' when the noise is no larger than the loss the paper reports (100 % minus its retention: a "
        "noisier run cannot tell the claim from a worse student); otherwise, or when no task counts or a side has a "
        "single seed, '{unresolved}'.")

    def text(self):
        return self.template.format(scales=", ".join(self.paper_like), **WORDS)

    def verdict(self, ours, reference, noise, profile):
        if None in (ours, reference, noise):
            return UNRESOLVED
        if ours < reference and resolved(ours - reference, noise):
            return CONTRADICTED if profile in self.paper_like else NOT_REACHED
        return CONFIRMED if noise <= 100.0 - reference else UNRESOLVED


@dataclass(frozen=True)
class ChangeRule:
    """A change in GLUE score (Table 4, the initialisation, MLM only) against the paper's change or expected sign."""
    template: str = (
        "Changes in GLUE score (Table 4 and the two baselines): '{unresolved}' unless the change is resolved (the "
        "resolution rule); a resolved change of the other sign than the paper's is '{contradicted}'; one of the "
        "paper's sign is '{confirmed}' when it is also within the noise of the paper's change (|ours - paper's| no "
        "larger than the larger seed range) and '{same_sign}' when it is not (the paper's changes are over its "
        "{n} tasks, ours over the counted tasks the row names). Where the paper implies only a sign, a resolved "
        "change of that sign is '{confirmed}'.")

    def text(self):
        return self.template.format(n=len(paper.GLUE_TASKS), **WORDS)

    def verdict(self, change, noise, reference=None, sign=None):
        """``reference``: the paper's change; without one, ``sign`` (+1 or -1) is the expected sign."""
        expected = sign if reference is None else (1 if reference > 0 else -1)
        ok = resolved(change, noise)
        if not ok or expected is None:
            return UNRESOLVED
        if (change > 0) != (expected > 0):
            return CONTRADICTED
        return CONFIRMED if reference is None or abs(change - reference) <= noise else SAME_SIGN


@dataclass(frozen=True)
class ToleranceRule:
    """A ratio without seeds (a count, one timing pass), judged by a fixed tolerance in points of the ratio;
    ``one_sided``: only a ratio above the paper's by more than the tolerance contradicts (lower is better)."""
    measure: str
    tolerance: float
    one_sided: bool
    why: str

    def text(self):
        tol = f"{self.tolerance:g} point{'s' if self.tolerance != 1 else ''}"
        if self.one_sided:
            return (f"{self.measure}: '{CONFIRMED}' when ours is at most the paper's ratio plus {tol}, that is as low "
                    f"as the paper's or lower (a lower ratio is better, so it confirms the claim however far below), "
                    f"within {tol} on the high side; '{CONTRADICTED}' when higher than that. {self.why}")
        return (f"{self.measure}: '{CONFIRMED}' within {tol} of the paper's ratio on either side, "
                f"'{CONTRADICTED}' outside. {self.why}")

    def bound(self):
        """The scorecard's noise cell: the tolerance and its sides."""
        unit = "pt" if self.tolerance == 1 else "pts"
        return f"+{self.tolerance:g} {unit} (one-sided)" if self.one_sided else f"\u00b1{self.tolerance:g} {unit}"

    def verdict(self, ours, reference):
        if None in (ours, reference):
            return UNRESOLVED
        gap = ours - reference
        return CONFIRMED if (gap if self.one_sided else abs(gap)) <= self.tolerance else CONTRADICTED


RETENTION_RULE = RetentionRule()
CHANGE_RULE = ChangeRule()
PARAMS_RULE = ToleranceRule("Parameters (student / teacher, the paper's shapes, without MLM head)", 1.0, False,
                            "The paper prints its counts rounded to the million.")
TIME_RULE = ToleranceRule("Inference time (time ratio, student / teacher)", 5.0, True,
                          "One timing pass has no seeds, so the fixed tolerance stands in for seed noise.")
VERDICT_RULES = " ".join(rule.text() for rule in (RETENTION_RULE, CHANGE_RULE, PARAMS_RULE, TIME_RULE))


# ------------------------------------------------------------------------------------------- scorecard (intro)

EVIDENCE = {config.GLUE: "table1_glue.html", "params": "table3_speed.html", "time": "table3_speed.html",
            IMDB: "table2_downstream.html", SQUAD: "table2_downstream.html", "ablation": "table4_ablation.html"}


def _largest(name, root=None):
    """(profile, record) of the largest real scale (REAL_SCALES) with results/<profile>/<name>.json, else (None, None)."""
    for profile in REAL_SCALES:
        record = load(profile, name, root)
        if record is not None:
            return profile, record
    return None, None


def _row(claim, evidence, reference, profile=None, measured=None, seeds=None, floor=None, noise=None,
         verdict=NOT_RUN, note=""):
    return {"claim": claim, "paper (reference)": reference, "measured": measured, "scale": profile or "\u2014",
            "seeds": seeds, "floor": floor, "noise": noise, "verdict": verdict, "note": note, "evidence": evidence}


def _fmt(value, unit=" %", tasks=None):
    """A scorecard cell: '55.3 %', with its task set in brackets when given."""
    if value is None:
        return "\u2014"
    return f"{value:.1f}{unit}" + (f" ({tasks})" if tasks else "")


def _change(value, tasks=None):
    return "\u2014" if value is None else f"{value:+.1f} pts" + (f" ({tasks})" if tasks else "")


def scorecard(root=None):
    """One row per claim of the paper: what was measured, at the largest real scale with results (paper > t4 >
    cpu, never smoke), over how many seeds, the floor, the seed noise, a verdict (VERDICT_RULES: the rule objects
    above, with the one rule of ``resolved``) and the page with the evidence."""
    import pandas as pd
    rows = [_glue_retention_row(root), _params_row(root), _speed_row(root)]
    pdr = paper_downstream_retention()
    rows += [_downstream_row(task, column, claim, pdr[column], root)
             for task, column, claim in ((IMDB, "imdb_accuracy", "IMDb accuracy retained"),
                                         (SQUAD, "squad_f1", "SQuAD 1.1 F1 retained"))]
    scale = _ablation_scale(root)
    rows += [_ablation_row(label, delta, scale, root) for label, delta in paper.TABLE4.items()]
    rows += [_initialisation_row(scale, root), _mlm_only_row(scale, root)]
    return pd.DataFrame(rows)


def _glue_retention_row(root):
    """GLUE retention (counted_glue_retention) at the largest real scale with GLUE results, against the paper's
    retention on the same tasks; noise: the larger counted seed range over the teacher's counted score."""
    profile, record = _largest(config.GLUE, root)
    claim = f"retains {paper.CLAIM['glue_retained_percent']} % of the teacher's GLUE score"
    nine = _fmt(paper_glue_retention()[GLUE_SCORE], tasks=f"{len(paper.GLUE_TASKS)} tasks")
    if record is None:
        return _row(claim, EVIDENCE[config.GLUE], nine)
    counted, excluded = counted_tasks(profile, root=root)
    if not counted:
        return _row(claim, EVIDENCE[config.GLUE], nine, profile, verdict=UNRESOLVED,
                    note=f"no task counts: {'; '.join(excluded.values())}")
    ours, _, reference = counted_glue_retention(profile, root)
    teacher = counted_glue_score(profile, paper.TEACHER, root)[0]
    ranges = [counted_glue_seed_range(profile, m, root)[0] for m in (paper.STUDENT, paper.TEACHER)]
    noise = max(ranges) * 100.0 / teacher if None not in ranges and teacher else None
    per_seed = seed_scores(profile, root=root, tasks=counted)
    seeds = min((len(per_seed.get(m) or {}) for m in (paper.STUDENT, paper.TEACHER)), default=None)
    floors = task_floors(profile, root=root)
    floor = retention_percent(_mean([floors[t][0] for t in counted]), teacher)
    undistilled = counted_glue_retention(profile, root, student=_undistilled(profile, root))[0]
    tasks = task_set_label(counted)
    return _row(claim, EVIDENCE[config.GLUE], _fmt(reference, tasks="same tasks"), profile,
                _fmt(ours, tasks=tasks), seeds, f"constant answer {_fmt(floor)}; undistilled {_fmt(undistilled)}",
                _fmt(noise, " pts"), RETENTION_RULE.verdict(ours, reference, noise, profile),
                f"macro average of per-task medians over the counted tasks; left out: "
                f"{task_set_label(excluded)}" if excluded else "macro average of per-task medians")


def _params_row(root):
    """Parameters, DistilBERT / BERT-base shapes as stage 5 counted them (encoder_parameter_ratio), not this
    scale's trained pair (the headline and the CPU page give that one)."""
    profile, latency = _largest(config.LATENCY, root)
    reference = paper_parameter_ratio()
    claim = f"{paper.CLAIM['smaller_percent']} % fewer parameters (student / teacher)"
    ours = encoder_parameter_ratio(profile, paper.DISTILBERT, paper.BERT_BASE, root) if latency else None
    if ours is None:
        return _row(claim, EVIDENCE["params"], _fmt(reference), profile,
                    verdict=NOT_RUN if latency is None else UNRESOLVED,
                    note="" if latency is None else "the paper's shapes were not counted at this scale")
    return _row(claim, EVIDENCE["params"], _fmt(reference), f"{profile} (paper's shapes)", _fmt(ours), None,
                "\u2014", PARAMS_RULE.bound(), PARAMS_RULE.verdict(ours, reference),
                f"{paper.DISTILBERT} / {paper.BERT_BASE} shapes, {NO_HEAD}; our student / teacher: "
                f"{_fmt(encoder_parameter_ratio(profile, paper.STUDENT, paper.TEACHER, root))}")


def _speed_row(root):
    """Inference time, student / teacher, timed by stage 5 (latency), judged by TIME_RULE."""
    profile, latency = _largest(config.LATENCY, root)
    timed = latency_models(latency) if latency else {}
    reference = paper_time_ratio()
    claim = f"{paper.CLAIM['faster_percent']} % faster (inference time student / teacher)"
    ratio = latency_ratio(latency) if latency else None
    if not ratio:
        return _row(claim, EVIDENCE["time"], _fmt(reference), profile,
                    verdict=NOT_RUN if latency is None else UNRESOLVED)
    n = (timed.get(ratio[0]) or {}).get("n_examples")
    shapes = f"{profile} (paper's shapes)" if ratio[0] == paper.DISTILBERT else profile
    return _row(claim, EVIDENCE["time"], _fmt(reference), shapes, _fmt(ratio[2]), None, "\u2014",
                TIME_RULE.bound(), TIME_RULE.verdict(ratio[2], reference),
                f"{ratio[0]} / {ratio[1]}, CPU batch 1, {n} timed STS-B dev pairs; "
                f"{_change(ratio[2] - reference)} against the paper's ratio")


def _downstream_row(task, column, claim, reference, root):
    """IMDb or SQuAD retention (``task``: 'imdb' or 'squad') at the largest real scale with stage 4 results."""
    profile, down = _largest(config.IMDB_SQUAD, root)
    per_seed = seed_scores(profile, config.IMDB_SQUAD, root, tasks=[task]) if down else {}
    if paper.STUDENT not in per_seed or paper.TEACHER not in per_seed:
        return _row(claim, EVIDENCE[task], _fmt(reference), profile if per_seed else None,
                    note="student or teacher missing at this scale" if per_seed else
                    "not fine-tuned at any real scale with results")
    ours = downstream_retention(down).get(column)
    teacher = spread(per_seed[paper.TEACHER].values())[0]
    ranges = [seed_range(list(per_seed[m].values())) for m in (paper.STUDENT, paper.TEACHER)]
    noise = max(ranges) * 100.0 / teacher if None not in ranges and teacher else None
    floor = task_floors(profile, config.IMDB_SQUAD, root).get(task)
    base = per_seed.get("undistilled")
    floor_text = (f"majority class {_fmt(floor[0])} (accuracy)" if floor else "majority class not recorded") + (
        f"; undistilled {_fmt(downstream_retention(down, student='undistilled').get(column))}" if base else "")
    seeds = min(len(per_seed[paper.STUDENT]), len(per_seed[paper.TEACHER]))
    return _row(claim, EVIDENCE[task], _fmt(reference), profile, _fmt(ours), seeds, floor_text,
                _fmt(noise, " pts"), RETENTION_RULE.verdict(ours, reference, noise, profile))


def _ablation_scale(root):
    """What the change rows (Table 4, the initialisation, MLM only) read, at the largest real scale with
    distillation runs: its profile, GLUE record, counted tasks, runs, their Table 4 kinds and held-out measures."""
    profile = next((p for p in REAL_SCALES if distill_runs(p, root)), None)
    glue = load(profile, config.GLUE, root) if profile else None
    counted = counted_tasks(profile, root=root)[0] if glue is not None else []
    runs = distill_runs(profile, root) if profile else {}
    return {"profile": profile, "glue_record": glue, "counted": counted, "runs": runs,
            "kinds": _ablation_kinds(runs, paper.STUDENT),
            "heldout": heldout_measures(profile, root) if profile else {}}


def _change_row(claim, reference, scale, root, variant, base, note="", sign=None):
    """A change row: counted_glue_change of ``variant`` against ``base``, judged by CHANGE_RULE."""
    profile = scale["profile"]
    change, noise, counted = (counted_glue_change(profile, variant, base, root) if variant and base
                              else (None, None, scale["counted"]))
    ref_text = _change(reference, f"{len(paper.GLUE_TASKS)} tasks") if reference is not None else None
    if change is None:
        return _row(claim, EVIDENCE["ablation"], ref_text, profile if variant else None,
                    note=note or "this run was not evaluated at this scale")
    per_seed = seed_scores(profile, root=root, tasks=counted)
    seeds = min(len(per_seed.get(variant) or {}), len(per_seed.get(base) or {}))
    return _row(claim, EVIDENCE["ablation"], ref_text, profile, _change(change, task_set_label(counted)), seeds,
                "\u2014", _fmt(noise, " pts"), CHANGE_RULE.verdict(change, noise, reference, sign), note)


def _ablation_row(label, delta, scale, root):
    """A Table 4 row: the run of kind ``label`` against the student, on the counted GLUE tasks, with its
    held-out masked-token accuracy change."""
    profile, glue = scale["profile"], scale["glue_record"]
    run = next((name for name, kind in scale["kinds"].items() if kind == label), None)
    variant = _glue_label_for(run, glue) if (run and glue) else None
    note = "" if run else "no such distillation run at any real scale"
    constant = {t: kn for t, kn in (single_class_runs(glue, profile, root=root).get(variant) or {})
                .items() if t in scale["counted"]} if variant else {}
    if constant:  # a constant answer scores the floor: the change is then the distance to the floor
        note = f"{variant} predicted a single class on {_single_class_text(constant)} (seeds)"
    if run and not variant:
        note = note or "this run was not evaluated on GLUE at this scale"
    note = _join(note, heldout_note(scale["heldout"], run, same_budget_base(scale["runs"], run)) if run else "")
    row = _change_row(f"Table 4: {label}", delta, scale, root, variant, paper.STUDENT if variant else None, note)
    row["scale"] = profile if run else "\u2014"
    return row


def _initialisation_row(scale, root):
    """Distilled against undistilled (the teacher-layer initialisation alone): implied positive by the paper."""
    glue, runs = scale["glue_record"], scale["runs"]
    base = _run_params(runs[paper.STUDENT]) if paper.STUDENT in runs else {}
    name = base.get("undistilled_name")
    undistilled = _glue_label_for(name, glue) if (glue and name) else None
    note = "" if undistilled else "no undistilled student fine-tuned on GLUE at this scale"
    if name:  # measured on held-out text even where GLUE did not evaluate it
        note = _join(note, heldout_note(scale["heldout"], paper.STUDENT, name))
    row = _change_row("distillation adds to the teacher-layer initialisation (distilled - undistilled)", None,
                      scale, root, paper.STUDENT if undistilled else None, undistilled, note, sign=1)
    row["paper (reference)"] = "implied > 0 (not printed)"
    return row


def _mlm_only_row(scale, root):
    """Not in the paper: what the teacher adds over the same budget of masked-LM training alone."""
    glue = scale["glue_record"]
    alone = next(iter(mlm_only_runs(scale["runs"])), None)
    alone_label = _glue_label_for(alone, glue) if (alone and glue) else None
    note = "" if alone else "no MLM-only run at any real scale"
    if alone:
        note = _join(note, heldout_note(scale["heldout"], same_budget_base(scale["runs"], alone), alone))
    row = _change_row("the teacher's signal adds to masked-LM training alone (distilled - MLM loss only)", None,
                      scale, root, paper.STUDENT if alone_label else None, alone_label, note, sign=1)
    row["paper (reference)"] = "not in the paper"
    if alone and not alone_label:
        row["scale"] = scale["profile"]
    return row


# variant minus triple loss for the two baselines the paper does not print: its method implies both do worse
EXPECTED_SIGN = {report.UNDISTILLED_LABEL: -1, report.MLM_ONLY_LABEL: -1}


def ablation_verdicts(table):
    """CHANGE_RULE's verdict for each row of report.ablation_table (the scorecard's, for the Table 4 page); rows
    with no change or no paper change and no expected sign: None."""
    verdicts = []
    for variant, row in table.iterrows():
        change, noise, reference = row["change (points)"], row["seed range (points)"], row["paper change (points)"]
        known = change is not None and change == change and variant != "triple loss (reference)"
        reference = reference if reference == reference else None  # NaN: not in the paper
        noise = noise if noise == noise else None
        verdicts.append(CHANGE_RULE.verdict(change, noise, reference, EXPECTED_SIGN.get(variant)) if known else None)
    return verdicts


def _join(*notes):
    """Scorecard notes joined by '; ', the empty ones left out."""
    return "; ".join(n for n in notes if n)
