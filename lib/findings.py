"""What the results say about each claim of the paper: the intro's scorecard (one row per claim, with a verdict),
the headline table, and one scale's findings (the CPU-scale page). Built on lib.report's tables and its rules
(resolved, counted_tasks, the seed noise); every number is read from results files or lib.paper, none typed here.
"""
from lib import config, paper, results
from lib.tasks import IMDB, SQUAD  # Table 2's tasks
from lib.report import (  # noqa: F401
    GLUE_SCORE,
    REAL_SCALES,
    _ablation_kinds,
    _glue_label_for,
    _mean,
    _run_params,
    _single_class_text,
    _summary_rows,
    counted_glue,
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
    profiles,
    resolved,
    retention_percent,
    root_dir,
    seed_range,
    seed_scores,
    single_class_runs,
    spread,
    task_floors,
    task_noise,
)


# ------------------------------------------------------------------------------------------- headline (intro)

def headline(root=None):
    """The one-screen summary: per scale (columns), the claim's three ratios and the downstream retentions,
    each as text ('96.9 %' or 'not run'); the paper's column first."""
    import pandas as pd
    rows = ["teacher -> student", "parameters: student / teacher", "GLUE score: student / teacher",
            "inference time: student / teacher", "IMDb accuracy: student / teacher", "SQuAD F1: student / teacher"]
    pg = paper_glue_retention()
    pd_ret = paper_downstream_retention()
    bert, distilbert = paper.TABLE3[paper.BERT_BASE], paper.TABLE3[paper.DISTILBERT]
    columns = {"paper": [
        f"{paper.BERT_BASE} -> {paper.DISTILBERT}",
        _pct(retention_percent(distilbert["params_m"], bert["params_m"])),
        _pct(pg[GLUE_SCORE], "9 tasks"),
        _pct(retention_percent(distilbert["seconds"], bert["seconds"])),
        _pct(pd_ret["imdb_accuracy"]), _pct(pd_ret["squad_f1"])]}
    for profile in profiles(root):
        if profile != "smoke":  # the smoke scale checks the pipeline: never beside the paper (its own pages show it)
            columns[profile] = _headline_column(profile, root)
    return pd.DataFrame(columns, index=pd.Index(rows, name="measure"))


def _pct(value, note=None):
    if value is None:
        return "not run"
    return f"{value:.1f} %" + (f" ({note})" if note else "")


def _headline_column(profile, root):
    runs = distill_runs(profile, root)
    run = runs.get(paper.STUDENT) or next(iter(runs.values()), None)
    if run:
        teacher = run.teacher
        stage1 = load(profile, config.TEACHER, root)
        if stage1 and teacher.startswith(("runs/", "{run_dir}")):  # a teacher stage 1 saved: name its origin
            teacher = f"{stage1.teacher} (stage 1)"
        pair = f"{teacher} -> {run.student_parameters / 1e6:.1f}M-parameter student"
        params = _pct(retention_percent(run.student_parameters, run.teacher_parameters))
    else:
        pair, params = "not run", "not run"
    glue = load(profile, config.GLUE, root)
    glue_ret, counted, same_tasks = counted_glue(profile, root)
    glue_text = (_pct(glue_ret, f"{len(counted)} counted tasks; paper on the same: {same_tasks:.1f} %")
                 if glue_ret is not None else ("no task counts" if glue else "not run"))
    latency = load(profile, config.LATENCY, root)
    ratio = latency_ratio(latency) if latency else None
    time_text = _pct(ratio[2], f"{ratio[0]} / {ratio[1]}") if ratio else "not run"
    down = load(profile, config.IMDB_SQUAD, root)
    down_ret = downstream_retention(down) if down else {}
    return [pair, params, glue_text, time_text, _pct(down_ret.get("imdb_accuracy")), _pct(down_ret.get("squad_f1"))]


# ------------------------------------------------------------------------------------------- one scale's findings

def seed_noise(record):
    """Median over (model, task) of a task score's range across fine-tuning seeds (points): differences between
    models smaller than this are not resolved by the run. None without several seeds."""
    import statistics
    ranges = [row["max"] - row["min"] for row in _summary_rows(record)
              if row.get("metric") == "score" and row.get("task") != GLUE_SCORE and (row.get("n") or 0) > 1
              and None not in (row.get("max"), row.get("min"))]
    return statistics.median(ranges) if ranges else None


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
    facts["parameters"] = retention_percent(run.student_parameters, run.teacher_parameters) if run else None
    glue = load(profile, config.GLUE, root)
    facts["glue_run_tasks"] = glue_tasks(glue) if glue else []
    facts["glue_student"], facts["glue_tasks"], facts["glue_paper"] = counted_glue(profile, root)
    facts["glue_excluded"] = counted_tasks(profile, root=root)[1] if glue else {}
    facts["glue_undistilled"] = counted_glue(profile, root, student="undistilled")[0]
    scores = glue_scores(glue) if glue else {}
    teacher = scores.get(paper.TEACHER) or {}
    facts["glue_teacher_score"] = _mean([teacher.get(t) for t in facts["glue_tasks"]]) if facts["glue_tasks"] else None
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
                            "adapt_steps": params.get("adapt_steps"), "adapt_top_layers": params.get("adapt_top_layers")}
    runs = distill_runs(profile, root)
    if paper.STUDENT in runs:
        params = _run_params(runs[paper.STUDENT])
        setup[config.DISTILL] = {"student_layers": runs[paper.STUDENT].student_layers,
                            **{k: params.get(k) for k in (*config.DistillParams.weight_names(), "temperature",
                                                         "undistilled_name")},
                            "corpus": [c.get("id") or c.get("path") for c in params.get("corpus") or []],
                            "ablations": _ablation_kinds(runs, paper.STUDENT), "mlm_only": mlm_only_runs(runs)}
    for name in (config.GLUE, config.IMDB_SQUAD):
        record = load(profile, name, root)
        if record:
            params = _run_params(record)
            setup[name] = {k: params.get(k) for k in ("tasks", "seeds", "n_epoch", "max_train_samples",
                                                      "max_eval_samples", "task_overrides", "imdb_max_length")}
            setup[name]["models"] = list(model_paths(record))
    latency = load(profile, config.LATENCY, root)
    if latency:
        setup[config.LATENCY] = {"models": list(latency_models(latency)),
                                 "max_examples": _run_params(latency).get("max_examples")}
    return setup


def findings_table(facts):
    """The findings of one scale beside the paper's, as a table (retention in percent of the teacher)."""
    import pandas as pd
    pd_ret = paper_downstream_retention()
    bert, distilbert = paper.TABLE3[paper.BERT_BASE], paper.TABLE3[paper.DISTILBERT]
    time_paper = retention_percent(distilbert["seconds"], bert["seconds"])
    params_paper = retention_percent(distilbert["params_m"], bert["params_m"])
    n = len(facts["glue_tasks"])
    rows = [
        ("parameters: student / teacher (%)", facts["parameters"], params_paper),
        (f"GLUE score ({n} tasks): distilled student / teacher (%)", facts["glue_student"], facts["glue_paper"]),
        (f"GLUE score ({n} tasks): undistilled student / teacher (%)", facts["glue_undistilled"], None),
        ("IMDb accuracy: distilled student / teacher (%)", facts["imdb_student"], pd_ret["imdb_accuracy"]),
        ("IMDb accuracy: undistilled student / teacher (%)", facts["imdb_undistilled"], None),
        ("inference time, DistilBERT / BERT-base shapes (%)", facts["time_architecture"], time_paper),
        ("inference time, our student / our teacher (%)", facts["time_trained"], None),
    ]
    return pd.DataFrame([{"measure": m, "this run": ours, "paper": ref} for m, ours, ref in rows]).set_index("measure")


# ------------------------------------------------------------------------------------------- scorecard (intro)

CONFIRMED, CONTRADICTED, UNRESOLVED, NOT_RUN = ("confirmed", "contradicted", "not resolved at this scale", "not run")
TIMING_TOLERANCE = 5.0  # points of a time ratio: one timing pass has no seeds, so no seed range to compare with
PARAMS_TOLERANCE = 1.0  # points of a parameter ratio: the paper prints its counts rounded to the million
VERDICT_RULES = (
    "Retention (student / teacher): contradicted when ours is below the paper's on the same tasks by more than the "
    "seed noise (the rule above, in points of retention); confirmed when it is not and the noise is no larger than "
    "the loss the paper reports (100 % minus its retention: a noisier run cannot tell the claim from a worse "
    "student); otherwise, or when no task counts or a side has a single seed, not resolved. Table 4 and the initialisation: confirmed when "
    "the change is resolved and has the paper's sign, contradicted when resolved with the other sign, else not "
    f"resolved. Parameters: confirmed within {PARAMS_TOLERANCE:g} point of the paper's ratio (its counts are rounded "
    f"to the million), on the paper's shapes only. Inference time: one timing pass has no seed noise, so a fixed "
    f"tolerance of {TIMING_TOLERANCE:g} points of the time ratio stands in for it.")
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


def _fmt(value, unit=" %"):
    return "\u2014" if value is None else f"{value:.1f}{unit}"


def _retention_verdict(ours, reference, noise):
    """VERDICT_RULES for a retention: contradicted when resolved below the paper's; confirmed when not, provided the
    noise is no larger than the loss the paper reports (100 - its retention), else not resolved."""
    if ours is None or reference is None or noise is None:
        return UNRESOLVED
    difference = ours - reference
    if difference < 0 and resolved(difference, noise):
        return CONTRADICTED
    return CONFIRMED if noise <= 100.0 - reference else UNRESOLVED


def _retention_row(claim, evidence, reference, profile, per_seed, floor_text, student, teacher, baseline=None):
    """A retention row from {model: {seed: score}}: medians, the seed ranges turned into points of retention."""
    if student not in per_seed or teacher not in per_seed:
        return _row(claim, evidence, _fmt(reference), profile, note="student or teacher missing at this scale")
    s_med, t_med = spread(per_seed[student].values())[0], spread(per_seed[teacher].values())[0]
    ours = retention_percent(s_med, t_med)
    ranges = [seed_range(list(per_seed[m].values())) for m in (student, teacher)]
    noise = max(ranges) * 100.0 / t_med if None not in ranges and t_med else None
    seeds = min(len(per_seed[student]), len(per_seed[teacher]))
    base = per_seed.get(baseline) if baseline else None
    floor = floor_text
    if base:
        floor += f"; undistilled {_fmt(retention_percent(spread(base.values())[0], t_med))}"
    return _row(claim, evidence, _fmt(reference), profile, _fmt(ours), seeds, floor, _fmt(noise, " pts"),
                _retention_verdict(ours, reference, noise))


def _change_row(claim, evidence, reference, profile, per_seed, variant, base, note=""):
    """A change row: median(variant) - median(base) in GLUE points, judged by ``resolved`` and the paper's sign."""
    if variant not in per_seed or base not in per_seed:
        return _row(claim, evidence, _fmt(reference, " pts"), profile if per_seed else None,
                    note=note or "this run was not evaluated at this scale")
    a, b = per_seed[variant], per_seed[base]
    change = spread(a.values())[0] - spread(b.values())[0]
    ra, rb = seed_range(list(a.values())), seed_range(list(b.values()))
    ok = resolved(change, ra, rb)
    if ok is None or not ok:
        verdict = UNRESOLVED
    else:
        verdict = UNRESOLVED if reference is None else (CONFIRMED if (change > 0) == (reference > 0) else CONTRADICTED)
    noise = max(r for r in (ra, rb) if r is not None) if (ra, rb) != (None, None) else None
    return _row(claim, evidence, _fmt(reference, " pts"), profile, _fmt(change, " pts"), min(len(a), len(b)),
                "\u2014", _fmt(noise, " pts"), verdict, note)


def scorecard(root=None):
    """One row per claim of the paper: what was measured, at the largest real scale with results (paper > t4 >
    cpu, never smoke), over how many seeds, the floor, the seed noise, a verdict (VERDICT_RULES, with the one
    rule of ``resolved``) and the page with the evidence. Every value is read from results files or lib.paper."""
    import pandas as pd
    rows = [_glue_retention_row(root), _params_row(root), _speed_row(root)]
    pdr = paper_downstream_retention()
    rows += [_downstream_row(task, column, claim, pdr[column], root)
             for task, column, claim in ((IMDB, "imdb_accuracy", "IMDb accuracy retained"),
                                         (SQUAD, "squad_f1", "SQuAD 1.1 F1 retained"))]
    scale = _ablation_scale(root)
    rows += [_ablation_row(label, delta, scale, root) for label, delta in paper.TABLE4.items()]
    rows += [_initialisation_row(scale), _mlm_only_row(scale)]
    return pd.DataFrame(rows)


def _glue_retention_row(root):
    """GLUE retention, on the tasks that count at the largest real scale with GLUE results, against the paper's
    retention on the same tasks."""
    profile, record = _largest(config.GLUE, root)
    claim = f"retains {paper.CLAIM['glue_retained_percent']} % of the teacher's GLUE score"
    if record is None:
        return _row(claim, EVIDENCE[config.GLUE], _fmt(paper_glue_retention()[GLUE_SCORE]))
    counted, excluded = counted_tasks(profile, root=root)
    if not counted:
        return _row(claim, EVIDENCE[config.GLUE], _fmt(paper_glue_retention()[GLUE_SCORE]), profile,
                    verdict=UNRESOLVED, note=f"no task counts: {'; '.join(excluded.values())}")
    per_seed = seed_scores(profile, root=root, tasks=counted)
    reference = paper_glue_retention(counted)[GLUE_SCORE]
    names = ", ".join(paper.TASK_NAMES.get(t, t) for t in counted) or "none"
    floors = task_floors(profile, root=root)
    floor = _mean([floors[t][0] for t in counted])
    teacher = spread((per_seed.get(paper.TEACHER) or {}).values())[0]
    floor_text = f"constant answer {_fmt(retention_percent(floor, teacher))}"
    row = _retention_row(claim, EVIDENCE[config.GLUE], reference, profile, per_seed, floor_text,
                         paper.STUDENT, paper.TEACHER, "undistilled")
    ours = counted_glue(profile, root)[0]
    row["measured"] = _fmt(ours)
    noise_text = row.get("noise")  # None or an em dash when no per-seed scores were recorded
    noise = float(noise_text.split()[0]) if isinstance(noise_text, str) and noise_text != "\u2014" else None
    row["verdict"] = _retention_verdict(ours, reference, noise)
    row["note"] = (f"macro average of per-task medians; {len(counted)} counted tasks ({names}); "
                   "paper's retention on the same tasks"
                   + (f"; left out: {len(excluded)} ({', '.join(paper.TASK_NAMES.get(t, t) for t in excluded)})"
                      if excluded else ""))
    return row


def _params_row(root):
    """Parameters, student / teacher: the paper's shapes, counted by stage 5 (latency)."""
    profile, latency = _largest(config.LATENCY, root)
    timed = latency_models(latency) if latency else {}
    reference = retention_percent(paper.TABLE3[paper.DISTILBERT]["params_m"], paper.TABLE3[paper.BERT_BASE]["params_m"])
    claim = f"{paper.CLAIM['smaller_percent']} % fewer parameters (student / teacher)"
    ours = (retention_percent(timed[paper.DISTILBERT].get("params_m"), timed[paper.BERT_BASE].get("params_m"))
            if paper.DISTILBERT in timed and paper.BERT_BASE in timed else None)
    if ours is None:
        return _row(claim, EVIDENCE["params"], _fmt(reference), profile,
                    verdict=NOT_RUN if latency is None else UNRESOLVED,
                    note="" if latency is None else "the paper's shapes were not counted at this scale")
    verdict = CONFIRMED if abs(ours - reference) <= PARAMS_TOLERANCE else CONTRADICTED
    return _row(claim, EVIDENCE["params"], _fmt(reference), profile, _fmt(ours), None, "\u2014",
                "none (a count)", verdict, "BERT-base and DistilBERT shapes, without the MLM head")


def _speed_row(root):
    """Inference time, student / teacher, timed by stage 5 (latency), within TIMING_TOLERANCE of the paper's."""
    profile, latency = _largest(config.LATENCY, root)
    timed = latency_models(latency) if latency else {}
    reference = retention_percent(paper.TABLE3[paper.DISTILBERT]["seconds"], paper.TABLE3[paper.BERT_BASE]["seconds"])
    claim = f"{paper.CLAIM['faster_percent']} % faster (inference time student / teacher)"
    ratio = latency_ratio(latency) if latency else None
    if not ratio:
        return _row(claim, EVIDENCE["time"], _fmt(reference), profile,
                    verdict=NOT_RUN if latency is None else UNRESOLVED)
    verdict = CONFIRMED if ratio[2] - reference <= TIMING_TOLERANCE else CONTRADICTED
    n = (timed.get(ratio[0]) or {}).get("n_examples")
    return _row(claim, EVIDENCE["time"], _fmt(reference), profile, _fmt(ratio[2]), None, "\u2014",
                f"tolerance {TIMING_TOLERANCE:g} pts", verdict,
                f"{ratio[0]} / {ratio[1]}, CPU batch 1, {n} timed STS-B dev examples")


def _downstream_row(task, column, claim, reference, root):
    """IMDb or SQuAD retention (``task``: 'imdb' or 'squad') at the largest real scale with stage 4 results."""
    profile, down = _largest(config.IMDB_SQUAD, root)
    per_seed = seed_scores(profile, config.IMDB_SQUAD, root, tasks=[task]) if down else {}
    if not per_seed:
        return _row(claim, EVIDENCE[task], _fmt(reference), None, note="not fine-tuned at any real scale with results")
    floor = task_floors(profile, config.IMDB_SQUAD, root).get(task)
    floor_text = f"majority class {_fmt(floor[0])} (accuracy)" if floor else "majority class not recorded"
    return _retention_row(claim, EVIDENCE[task], reference, profile, per_seed, floor_text,
                          paper.STUDENT, paper.TEACHER, "undistilled")


def _ablation_scale(root):
    """What the change rows (Table 4, the initialisation, MLM only) read, at the largest real scale with
    distillation runs: its profile, GLUE record, counted tasks, per-seed GLUE scores on them, runs, their Table 4
    kinds and held-out measures."""
    profile = next((p for p in REAL_SCALES if distill_runs(p, root)), None)
    glue = load(profile, config.GLUE, root) if profile else None
    counted = counted_tasks(profile, root=root)[0] if glue is not None else []
    runs = distill_runs(profile, root) if profile else {}
    return {"profile": profile, "glue_record": glue, "counted": counted,
            "per_seed": seed_scores(profile, root=root, tasks=counted) if (glue is not None and counted) else {},
            "runs": runs, "kinds": _ablation_kinds(runs, paper.STUDENT),
            "heldout": heldout_measures(profile, root) if profile else {}}


def _ablation_row(label, delta, scale, root):
    """A Table 4 row: the run of kind ``label`` against the student, on the counted GLUE tasks, with its
    held-out masked-token accuracy change."""
    profile, glue, per_seed = scale["profile"], scale["glue_record"], scale["per_seed"]
    run = next((name for name, kind in scale["kinds"].items() if kind == label), None)
    variant = _glue_label_for(run, glue) if (run and glue) else None
    note = "" if run else "no such distillation run at any real scale"
    constant = {t: kn for t, kn in (single_class_runs(glue, profile, root=root).get(variant) or {})
                .items() if t in scale["counted"]} if variant else {}
    if constant:  # a constant answer scores the floor: the change is then the distance to the floor
        note = f"{variant} predicted a single class on {_single_class_text(constant)} (seeds)"
    if run and variant not in per_seed:
        note = note or "this run was not evaluated on GLUE at this scale"
    note = _join(note, heldout_note(scale["heldout"], run) if run else "")
    return _change_row(f"Table 4: {label}", EVIDENCE["ablation"], delta, profile if run else None, per_seed,
                       variant, paper.STUDENT, note)


def _initialisation_row(scale):
    """Distilled against undistilled (the teacher-layer initialisation alone): implied positive by the paper."""
    glue, per_seed, runs = scale["glue_record"], scale["per_seed"], scale["runs"]
    base = _run_params(runs[paper.STUDENT]) if paper.STUDENT in runs else {}
    undistilled = _glue_label_for(base.get("undistilled_name"), glue) if (glue and base.get("undistilled_name")) else None
    row = _change_row("distillation adds to the teacher-layer initialisation (distilled - undistilled)",
                      EVIDENCE["ablation"], None, scale["profile"] if undistilled else None, per_seed,
                      paper.STUDENT, undistilled,
                      "" if undistilled else "no undistilled student fine-tuned on GLUE at this scale")
    row["paper (reference)"] = "implied > 0 (not printed)"
    if base.get("undistilled_name"):  # measured on held-out text even where GLUE did not evaluate it
        row["note"] = _join(row["note"], heldout_note(scale["heldout"], paper.STUDENT, base.get("undistilled_name")))
    _sign_verdict(row, per_seed, paper.STUDENT, undistilled)
    return row


def _mlm_only_row(scale):
    """Not in the paper: what the teacher adds over the same budget of masked-LM training alone."""
    glue, per_seed = scale["glue_record"], scale["per_seed"]
    alone = next(iter(mlm_only_runs(scale["runs"])), None)
    alone_label = _glue_label_for(alone, glue) if (alone and glue) else None
    row = _change_row("the teacher's signal adds to masked-LM training alone (distilled - MLM loss only)",
                      EVIDENCE["ablation"], None, scale["profile"] if alone else None, per_seed, paper.STUDENT,
                      alone_label, "" if alone else "no MLM-only run at any real scale")
    row["paper (reference)"] = "not in the paper"
    if alone:
        row["note"] = _join(row["note"], heldout_note(scale["heldout"], paper.STUDENT, alone))
    _sign_verdict(row, per_seed, paper.STUDENT, alone_label)
    return row


def _join(*notes):
    """Scorecard notes joined by '; ', the empty ones left out."""
    return "; ".join(n for n in notes if n)


def _sign_verdict(row, per_seed, model, base):
    """A row whose expected sign is positive (``model`` above ``base``): confirmed or contradicted when the change of
    GLUE medians is resolved, else not resolved."""
    if row["verdict"] == NOT_RUN or row["measured"] == "\u2014":
        return
    change = spread(per_seed[model].values())[0] - spread(per_seed[base].values())[0]
    ok = resolved(change, seed_range(list(per_seed[model].values())), seed_range(list(per_seed[base].values())))
    row["verdict"] = UNRESOLVED if not ok else (CONFIRMED if change > 0 else CONTRADICTED)
