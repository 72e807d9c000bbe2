"""Tables for the book: our results (results/<profile>/*.json) side by side with the paper's (lib.paper).

Every number these functions return is read from a results file (through lib.results.read, the schema's one
reader) or from lib.paper; nothing is typed here. A results file that does not exist yet gives None (the page
then says "not run at this scale yet"); a file that exists but does not fit its schema raises, naming it,
because a silent gap would look like a missing run.

Functions return plain pandas DataFrames (tested in tests/test_report.py); lib.render formats them for the book.
Longer than the project's ~400 lines on purpose: one function per table of the book's report pages (Tables 1-4,
the held-out measures), one function per derived figure shown on more than one page (counted_glue_score,
counted_glue_retention, counted_glue_change, encoder_parameters_m, encoder_parameter_ratio, named by statistic
and task set) and the rules they share (resolved, counted_tasks, the seed noise), with the reading helpers at
the top. What the tables say about each claim (scorecard, headline, a scale's findings) is
lib.findings.
"""
import math
import os
from pathlib import Path

from lib import REPO_ROOT, config, glue, paper, results
from lib.tasks import IMDB, SQUAD  # Table 2's tasks

# DISTILBERT_RESULTS_DIR: build the book from another results tree (tests use a synthetic one)
RESULTS_ROOT = Path(os.environ.get("DISTILBERT_RESULTS_DIR") or REPO_ROOT / "results")
PROFILE_ORDER = ("smoke", "cpu", "gpu", "t4", "paper")  # smallest scale first

# short column names that still name the metric (all values x100, as in the paper)
GLUE_SCORE = glue.SCORE  # its row in a summary (lib.finetune.summarize), its column in our tables
TASK_COLUMNS = {GLUE_SCORE: "GLUE score", **{name: glue.TASKS[name].column for name in glue.PAPER_ORDER}}
SINGLE_CLASS_COLUMN = "single-class runs (seeds)"
FLOOR_ROW = "majority-class floor"  # Table 1's row of a constant answer's score per task (report.task_floors)
DOWNSTREAM_COLUMNS = {"imdb_accuracy": "IMDb acc (test, %)", "squad_exact_match": "SQuAD EM (dev, %)",
                      "squad_f1": "SQuAD F1 (dev, %)"}


# ------------------------------------------------------------------------------------------- reading results

def root_dir(root=None):
    return Path(root) if root is not None else RESULTS_ROOT


def load(profile, name, root=None):
    """The record of results/<profile>/<name>.json (lib.results), or None when that run has not happened."""
    return results.load(root_dir(root) / profile, name)


def profiles(root=None):
    """Profiles that have at least one results file, smallest scale first (unknown profiles last)."""
    base = root_dir(root)
    found = [p.name for p in base.iterdir() if p.is_dir() and any(p.glob("*.json"))] if base.is_dir() else []
    order = {p: i for i, p in enumerate(PROFILE_ORDER)}
    return sorted(found, key=lambda p: (order.get(p, len(order)), p))


def available(name, root=None):
    """[(profile, record)] for every profile with results/<profile>/<name>.json."""
    return [(p, r) for p in profiles(root) if (r := load(p, name, root)) is not None]


def distill_runs(profile, root=None):
    """{run_name: record} for every results/<profile>/distill-<run_name>.json."""
    folder = root_dir(root) / profile
    runs = {}
    prefix = config.DISTILL_RESULTS_PREFIX
    for path in sorted(folder.glob(f"{prefix}*.json")) if folder.is_dir() else []:
        runs[path.stem[len(prefix):]] = load(profile, path.stem, root)
    return runs


# ------------------------------------------------------------------------------------------- what to run

def reproduce_command(profile, name):
    stage = config.stage_of_results(name) or name
    return f"make reproduce PROFILE={profile} STAGES={stage}"


def not_run(profile, name):
    """What a page says when results/<profile>/<name>.json does not exist."""
    return (f"Not run at this scale yet: no results/{profile}/{name}.json. "
            f"Produce it with `{reproduce_command(profile, name)}`.")


# ------------------------------------------------------------------------------------------- helpers

def _summary_rows(record):
    return record.summary


def _value(rows, model, task, metric, statistic="median"):
    for row in rows:
        if row.get("model") == model and row.get("task") == task and row.get("metric") == metric:
            value = row.get(statistic)
            return None if value is None or _isnan(value) else float(value)
    return None


def _isnan(value):
    return isinstance(value, float) and math.isnan(value)


def _models(rows):
    """Model labels of a summary: the teacher first, then the student and its variants, then the others."""
    labels = list(dict.fromkeys(row["model"] for row in rows if "model" in row))
    rank = {paper.TEACHER: 0, paper.STUDENT: 1}
    return sorted(labels, key=lambda m: (rank.get(m, 2 if m.startswith(paper.STUDENT) else 3), m))


def retention_percent(student, teacher):
    """student / teacher in percent, or None when either is missing or the teacher's value is 0."""
    if student is None or teacher is None or teacher == 0:
        return None
    return 100.0 * student / teacher


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def model_paths(record):
    """label -> model id or path, from the stage parameters recorded in the provenance."""
    return _run_params(record).get("models") or {}


def _frame(rows, index_name="model"):
    """A table indexed by (source, row label): 'this run' rows first, then 'paper' rows."""
    import pandas as pd
    return pd.DataFrame(rows).set_index(["source", index_name])


def _pick(labels, *candidates):
    return next((c for c in candidates if c in labels), None)


# ------------------------------------------------------------------------------------------- Table 1: GLUE

def glue_tasks(record):
    """The GLUE tasks present in a glue.json summary, in the paper's column order."""
    present = {row.get("task") for row in _summary_rows(record)}
    return [t for t in paper.GLUE_TASKS if t in present]


def glue_scores(record, statistic="median"):
    """{model: {task: score}} with 'glue' = the macro average over the tasks present (as lib.finetune computes it)."""
    rows = _summary_rows(record)
    tasks = glue_tasks(record)
    scores = {}
    for model in _models(rows):
        per_task = {t: _value(rows, model, t, "score", statistic) for t in tasks}
        glue = _value(rows, model, GLUE_SCORE, "score", statistic)
        per_task[GLUE_SCORE] = glue if glue is not None else _mean(per_task.values())
        scores[model] = per_task
    return scores


def paper_glue(tasks, source=None):
    """The paper's Table 1 rows for ``tasks``; the score is the printed one for all nine tasks, else the macro
    average over the same subset (so that our partial score has a like-for-like reference)."""
    source = source or paper.TABLE1
    rows = {}
    for model in (paper.BERT_BASE, paper.DISTILBERT):
        row = {t: source[model].get(t) for t in tasks}  # keyed by task: None where the paper has no number
        row[GLUE_SCORE] = source[model]["score"] if set(tasks) == set(paper.GLUE_TASKS) else _mean(row.values())
        rows[model] = row
    return rows


def single_class_runs(record, profile=None, name=config.GLUE, root=None):
    """{model: {task: (seeds that predicted a single class, seeds)}}, tasks with at least one such seed: from the
    summary's single_class_seeds (lib.finetune.summarize), or, for a summary written before that column existed,
    from the per-run files results/<profile>/<name>/<model>/*.json when ``profile`` is given."""
    rows = _summary_rows(record)
    found = {}
    if any("single_class_seeds" in row for row in rows):
        for row in rows:
            k = row.get("single_class_seeds")
            if row.get("metric") == "score" and k is not None and not _isnan(k) and k > 0:
                found.setdefault(row["model"], {})[row["task"]] = (int(k), int(row.get("n") or 0))
        return found
    if profile is None:
        return found
    counts = {}
    for run in results.read_runs(root_dir(root) / profile / name):
        flag = _run_single_class(run)
        if flag is not None:
            k, n = counts.get((run.model, run.task), (0, 0))
            counts[(run.model, run.task)] = (k + flag, n + 1)
    for (model, task), (k, n) in counts.items():
        if k:
            found.setdefault(model, {})[task] = (k, n)
    return found


def _run_single_class(run):
    """A fine-tuning result's single_class, or from its first evaluation split's predicted_label_counts (results
    written before that field existed); None when unknown."""
    if run.single_class is not None:
        return run.single_class
    first = next(iter(run.predictions.values()), None) or {}
    counts = first.get("predicted_label_counts")
    return len(counts) == 1 if counts else None


def _single_class_text(per_task):
    order = {t: i for i, t in enumerate(paper.GLUE_TASKS)}
    return ", ".join(f"{paper.TASK_NAMES.get(t, t)} {k}/{n}" for t, (k, n) in
                     sorted(per_task.items(), key=lambda item: order.get(item[0], len(order)))) or "none"


def glue_table(record, teacher=paper.TEACHER, student=paper.STUDENT, exclude=(), profile=None, root=None):
    """Table 1 side by side: our models (medians over seeds) but those in ``exclude``, each one's retention of the
    teacher's score, the paper's BERT-base and DistilBERT and their retention. Index: row label; columns:
    'source' then score columns, then SINGLE_CLASS_COLUMN when a model predicted a single class on some task
    (``single_class_runs``; profile and root locate per-run files for summaries that predate the column)."""
    tasks = glue_tasks(record)
    columns = [GLUE_SCORE, *tasks]
    ours = {m: s for m, s in glue_scores(record).items() if m not in exclude}
    counted = counted_tasks(profile, root=root, teacher=teacher)[0] if profile else tasks
    for model, scores in ours.items():  # the GLUE score over the tasks that count, never over the others' zeros
        scores[GLUE_SCORE] = _counted_score((counted, ours, {}), model)  # counted_glue_score's statistic
    constant = single_class_runs(record, profile, root=root)
    marked = any(constant.get(m) for m in ours)
    rows = [{"source": "this run", "model": model, **{c: scores.get(c) for c in columns},
             **({SINGLE_CLASS_COLUMN: _single_class_text(constant.get(model, {}))} if marked else {})}
            for model, scores in ours.items()]
    others = [student] if student in ours else []
    others += [m for m in ours if m not in (teacher, student)]
    for model in others if teacher in ours else []:
        rows.append({"source": "this run", "model": f"{model} / {teacher} (%)",
                     **{c: retention_percent(ours[model].get(c), ours[teacher].get(c)) for c in columns}})
    if profile:
        floors = task_floors(profile, root=root)
        floor = {t: floors[t][0] for t in tasks if t in floors}
        rows.append({"source": "this run", "model": FLOOR_ROW, **floor,
                     GLUE_SCORE: _mean([floor.get(t) for t in counted]) if counted else None})
    ref = paper_glue(counted) if counted else {m: {GLUE_SCORE: None} for m in (paper.BERT_BASE, paper.DISTILBERT)}
    ref = {m: {**{t: paper.TABLE1[m].get(t) for t in tasks}, GLUE_SCORE: ref[m][GLUE_SCORE]} for m in ref}
    rows += [{"source": "paper", "model": model, **{c: scores[c] for c in columns}} for model, scores in ref.items()]
    rows.append({"source": "paper", "model": f"{paper.DISTILBERT} / {paper.BERT_BASE} (%)",
                 **{c: retention_percent(ref[paper.DISTILBERT][c], ref[paper.BERT_BASE][c]) for c in columns}})
    return _frame(rows).rename(columns=TASK_COLUMNS)


def glue_spread(record):
    """Seed statistics behind Table 1: model, task, metric, median, min, max, std, n (every metric), and where the
    summary has them, single_class_seeds and majority_rate (lib.finetune.summarize). The summary's own 'glue' row
    (a macro average over every task run, counted or not) is left out: the GLUE score is counted_glue_score's."""
    import pandas as pd
    frame = pd.DataFrame([row for row in _summary_rows(record) if row.get("task") != GLUE_SCORE])
    keep = [c for c in ("model", "task", "metric", "median", "min", "max", "std", "n", "single_class_seeds",
                        "majority_rate") if c in frame.columns]
    return frame[keep] if keep else frame


def glue_retention(record, teacher=paper.TEACHER, student=paper.STUDENT):
    """{task or 'glue': student / teacher (%)} for our run, or {} when either model is missing."""
    ours = glue_scores(record)
    if teacher not in ours or student not in ours:
        return {}
    return {t: retention_percent(ours[student].get(t), ours[teacher].get(t))
            for t in [GLUE_SCORE, *glue_tasks(record)]}


def paper_glue_retention(tasks=paper.GLUE_TASKS):
    ref = paper_glue(list(tasks))
    return {t: retention_percent(ref[paper.DISTILBERT][t], ref[paper.BERT_BASE][t]) for t in [GLUE_SCORE, *tasks]}


def budget_table(record):
    """The budget rule's measurements of a fine-tuning stage (its record's budget: lib.finetune.apply_budget_rule),
    one row per (task, rung) tried: training examples, epochs, the teacher's held-out score, the held-out floor, the
    target, whether it was reached and whether the rung became the task's budget. None when the stage had no ladder."""
    import pandas as pd
    budget = getattr(record, "budget", None) if record is not None else None
    if not budget:
        return None
    rows = [{"task": paper.TASK_NAMES.get(task, task), "training examples": rung["train_examples"],
             "epochs": rung["n_epoch"], "teacher held-out score": rung["heldout_score"],
             "held-out floor": rung["floor"], "target": rung["target"], "reached": "yes" if rung["passed"] else "no",
             "chosen": "yes" if rung["max_train_samples"] == entry["chosen"] else ""}
            for task, entry in budget.items() for rung in entry["rungs"]]
    return pd.DataFrame(rows).set_index(["task", "training examples"])


# ------------------------------------------------------------------------------------------- Table 2: IMDb, SQuAD

def downstream_scores(record, statistic="median"):
    """{model: {imdb_accuracy, squad_exact_match, squad_f1}} (None where a task was not run)."""
    rows = _summary_rows(record)
    return {model: {"imdb_accuracy": _value(rows, model, IMDB, "accuracy", statistic),
                    "squad_exact_match": _value(rows, model, SQUAD, "exact_match", statistic),
                    "squad_f1": _value(rows, model, SQUAD, "f1", statistic)}
            for model in _models(rows)}


def downstream_table(record, teacher=paper.TEACHER, student=paper.STUDENT, profile=None, root=None):
    """Table 2 side by side: our models, student/teacher retention, with ``profile`` the majority-class floor of
    IMDb (FLOOR_ROW, task_floors), the paper's rows and retention."""
    columns = list(paper.TABLE2_METRICS)
    ours = downstream_scores(record)
    rows = [{"source": "this run", "model": model, **scores} for model, scores in ours.items()]
    for label in [m for m in ours if m != teacher]:  # the student, its (D), baselines
        if teacher in ours:
            rows.append({"source": "this run", "model": f"{label} / {teacher} (%)",
                         **{c: retention_percent(ours[label][c], ours[teacher][c]) for c in columns}})
    floor = task_floors(profile, config.IMDB_SQUAD, root).get(IMDB) if profile else None
    if floor is not None:
        rows.append({"source": "this run", "model": FLOOR_ROW, "imdb_accuracy": floor[0]})
    rows += [{"source": "paper", "model": model, **scores} for model, scores in paper.TABLE2.items()]
    rows += [{"source": "paper", "model": f"{model} / {paper.BERT_BASE} (%)",
              **{c: retention_percent(paper.TABLE2[model][c], paper.TABLE2[paper.BERT_BASE][c]) for c in columns}}
             for model in (paper.DISTILBERT, paper.DISTILBERT + " (D)")]
    table = _frame(rows).dropna(axis=1, how="all")  # a task not run at this scale and absent from the paper row
    return table.rename(columns=DOWNSTREAM_COLUMNS)


def downstream_retention(record, teacher=paper.TEACHER, student=paper.STUDENT):
    ours = downstream_scores(record)
    if teacher not in ours or student not in ours:
        return {}
    return {c: retention_percent(ours[student][c], ours[teacher][c]) for c in paper.TABLE2_METRICS}


def paper_downstream_retention():
    return {c: retention_percent(paper.TABLE2[paper.DISTILBERT][c], paper.TABLE2[paper.BERT_BASE][c])
            for c in paper.TABLE2_METRICS}


# ------------------------------------------------------------------------------------------- Table 3: size, speed

def latency_models(record):
    """{label: {seconds, params_m, size_mb, n_examples, per_example_ms}} from latency.json's ``table3`` rows
    (lib.latency.table3): seconds is the pass over the whole reference set (extrapolated from the timed examples),
    per_example_ms the median time per example."""
    return {row["model"]: {"seconds": row["extrapolated_total_s"], "params_m": row["params_m"],
                           "size_mb": row["size_mb"], "n_examples": row["n_examples"],
                           "per_example_ms": row["per_example_ms_median"]} for row in record.table3}


def latency_reference(labels):
    """The model other times are relative to: BERT-base when timed, else the teacher, else the first."""
    labels = list(labels)
    return _pick(labels, paper.BERT_BASE, paper.TEACHER) or (labels[0] if labels else None)


def latency_table(record):
    """Table 3 side by side: parameters (millions), pass time (s) and time relative to the reference model."""
    ours = latency_models(record)
    ref = latency_reference(ours)
    ref_s = (ours.get(ref) or {}).get("seconds")
    rows = [{"source": "this run", "model": label, "parameters (M)": m["params_m"], "examples timed": m["n_examples"],
             "time (s)": m["seconds"], "time / reference (%)": retention_percent(m["seconds"], ref_s), "reference": ref}
            for label, m in ours.items()]
    paper_ref = paper.TABLE3[paper.BERT_BASE]["seconds"]
    rows += [{"source": "paper", "model": model, "parameters (M)": m["params_m"], "examples timed": None,
              "time (s)": m["seconds"], "time / reference (%)": retention_percent(m["seconds"], paper_ref),
              "reference": paper.BERT_BASE} for model, m in paper.TABLE3.items()]
    table = _frame(rows).dropna(axis=1, how="all")
    if "examples timed" in table:
        table["examples timed"] = table["examples timed"].astype("Int64")
    return table


def latency_ratio(record):
    """(student-like label, reference label, time ratio in %): DistilBERT/BERT-base when both were timed (the
    architecture claim), else student/teacher (our trained models); None when neither pair was timed."""
    ours = latency_models(record)
    for fast, slow in ((paper.DISTILBERT, paper.BERT_BASE), (paper.STUDENT, paper.TEACHER)):
        if fast in ours and slow in ours:
            ratio = retention_percent(ours[fast]["seconds"], ours[slow]["seconds"])
            if ratio is not None:
                return fast, slow, ratio
    return None


def sweep_frame(record):
    import pandas as pd
    return pd.DataFrame(record.sweep)


# ------------------------------------------------------------------------------------------- Table 4: ablations

def classify_run(params, baseline):
    """Which of the paper's Table 4 ablations a distillation run is, from its parameters against the baseline
    run's: one term's weight set to 0, or random initialisation. None: not one of them (e.g. the baseline)."""
    if params.get("random_init") and not baseline.get("random_init"):
        return "random student initialisation"
    if mlm_only(params) and not mlm_only(baseline):
        return None  # no teacher signal at all: not one of the paper's rows (ablation_table adds it apart)
    for label in paper.TABLE4:  # "without L_<term> (...)": the run with alpha_<term> set to 0
        weight = "alpha_" + label.split()[1].removeprefix("L_") if label.startswith("without L_") else None
        if weight and params.get(weight) == 0 and (baseline.get(weight) or 0) > 0:
            return label
    return None


MLM_ONLY_LABEL = "no teacher signal (MLM loss only)"
UNDISTILLED_LABEL = "no distillation at all (teacher-layer init only)"


def mlm_only(params):
    """A run trained with the masked-LM loss alone (every other loss weight 0): the student with no teacher
    signal, which answers "what does the teacher add" for the same budget."""
    others = [k for k in config.DistillParams.weight_names() if k != "alpha_mlm"]
    return (params.get("alpha_mlm") or 0) > 0 and not any(params.get(k) for k in others)


def mlm_only_runs(runs, baseline_run=paper.STUDENT):
    """Names of the distillation runs trained on the masked-LM loss alone while ``baseline_run`` was not: the
    "no teacher signal" baseline beside the Table 4 ablations."""
    base = _run_params(runs[baseline_run]) if baseline_run in runs else {}
    return [name for name, rec in runs.items()
            if name != baseline_run and mlm_only(_run_params(rec)) and not mlm_only(base)]


def _run_params(record):
    return record.provenance.get("params") or {}


def same_budget_base(runs, name, baseline_run=paper.STUDENT):
    """The triple-loss run that run ``name`` is judged against: the one trained for as many steps (ablations sharing
    a shorter budget have a triple-loss run at it, e.g. triple-loss-200), else ``baseline_run``."""
    base = _run_params(runs[baseline_run]) if baseline_run in runs else {}
    steps = _run_params(runs[name]).get("max_steps") if name in runs else None
    if steps == base.get("max_steps"):
        return baseline_run
    weights = [*config.DistillParams.weight_names(), "random_init"]
    for other, record in runs.items():
        params = _run_params(record)
        if (other not in (name, baseline_run) and params.get("max_steps") == steps
                and all(params.get(w) == base.get(w) for w in weights)):
            return other
    return baseline_run


def _glue_label_for(run_name, glue_record):
    """The glue.json model label evaluated for a distillation run: the label whose model path ends in the
    run's name (runs/<profile>/<run_name>), or the label equal to it."""
    for label, path in model_paths(glue_record).items():
        if label == run_name or Path(str(path)).name == run_name:
            return label
    return None


def _ablation_kinds(runs, baseline_run):
    """{run_name: Table 4 label} of the distillation runs that are ablations of ``baseline_run``."""
    base = _run_params(runs[baseline_run]) if baseline_run in runs else {}
    return {name: kind for name, rec in runs.items()
            if name != baseline_run and (kind := classify_run(_run_params(rec), base))}


def ablation_table(profile, root=None, baseline_run=paper.STUDENT):
    """Table 4 at one scale: for each ablation run found (distill-<run>.json), its counted_glue_score, the change
    against the triple-loss run (counted_glue_change, points), the larger of the two counted seed ranges, whether
    the change is resolved (``resolved``), next to the paper's change (over its nine tasks). Rows with no GLUE
    result keep None."""
    import pandas as pd
    runs = distill_runs(profile, root)
    glue = load(profile, config.GLUE, root)
    context = _glue_context(profile, root)
    base = runs.get(baseline_run)
    base_params = _run_params(base) if base else {}
    base_label = _glue_label_for(baseline_run, glue) if (glue and base) else None

    def row(name, label, delta):
        change, noise = _change(context, label, base_label)
        ok = resolved(change, noise)
        return {"run": name, "GLUE score": _counted_score(context, label), "change (points)": change,
                "seed range (points)": noise, "resolved": None if ok is None else ("yes" if ok else "no"),
                "paper change (points)": delta}

    kinds = _ablation_kinds(runs, baseline_run)
    rows, index = [], []
    for label, delta in paper.TABLE4.items():
        found = [(name, runs[name]) for name, kind in kinds.items() if kind == label]
        for name, rec in found or [(None, None)]:
            index.append(label)
            rows.append(row(name, _glue_label_for(name, glue) if (rec and glue) else None, delta))
    undistilled = base_params.get("undistilled_name")
    undistilled_label = _glue_label_for(undistilled, glue) if (undistilled and glue) else None
    if undistilled_label is not None:  # not in the paper: the initialisation alone, never distilled
        index.append(UNDISTILLED_LABEL)
        rows.append(row(undistilled, undistilled_label, None))
    for name in mlm_only_runs(runs, baseline_run):  # not in the paper either: the same budget, no teacher signal
        index.append(MLM_ONLY_LABEL)
        rows.append(row(name, _glue_label_for(name, glue) if glue else None, None))
    index.append("triple loss (reference)")
    base_score = _counted_score(context, base_label)
    rows.append({"run": baseline_run if base else None, "GLUE score": base_score,
                 "change (points)": 0.0 if base_score is not None else None,
                 "seed range (points)": _counted_range(context, base_label), "resolved": None,
                 "paper change (points)": 0.0})
    return pd.DataFrame(rows, index=pd.Index(index, name="variant"))


def ablation_models(profile, root=None, baseline_run=paper.STUDENT):
    """The glue.json model labels of a profile's Table 4 ablation runs (Table 1 leaves them to Table 4)."""
    glue = load(profile, config.GLUE, root)
    if not glue:
        return []
    labels = [_glue_label_for(name, glue) for name in _ablation_kinds(distill_runs(profile, root), baseline_run)]
    return [label for label in labels if label is not None]


# ------------------------------------------------------------------------------------------- Table 4: held-out measures

HELDOUT_RULE = ("Held-out measures: one distillation run per variant, every model scored on the same masked positions "
                "of the stage's held-out sequences (never trained on). A difference in masked-token accuracy is "
                "called resolved when it exceeds twice its binomial standard error, 2 sqrt(p1 (1 - p1) / n1 + "
                "p2 (1 - p2) / n2) over the n masked targets. That error covers the sampling of the held-out masks "
                "only, not the variation between distillation seeds, which one run per variant does not measure.")


def heldout_measures(profile, root=None, baseline_run=paper.STUDENT):
    """{model: held-out measures} of a profile's stage 2: the reference models the main run recorded (the
    teacher, the undistilled student), then every run's final point (distill-<run>.json's heldout)."""
    runs = distill_runs(profile, root)
    base = runs.get(baseline_run)
    measured = dict((base.heldout_reference or {}) if base else {})
    measured.update({name: rec.heldout for name, rec in runs.items() if rec.heldout})
    return measured


def heldout_change(variant, base):
    """(masked-token accuracy of ``variant`` - ``base`` in points, twice its binomial standard error in points,
    resolved by HELDOUT_RULE) from two held-out measure dicts (mlm_accuracy in [0, 1], n_tokens)."""
    p1, p2 = variant["mlm_accuracy"], base["mlm_accuracy"]
    bound = 2 * 100.0 * (p1 * (1 - p1) / variant["n_tokens"] + p2 * (1 - p2) / base["n_tokens"]) ** 0.5
    change = 100.0 * (p1 - p2)
    return change, bound, abs(change) > bound


def _heldout_label(name, params, base_params, teacher_name=paper.TEACHER):
    if name == teacher_name:
        return "teacher (KL 0 by definition)"
    if name == base_params.get("undistilled_name"):
        return UNDISTILLED_LABEL
    if mlm_only(params) and not mlm_only(base_params):
        return MLM_ONLY_LABEL
    return classify_run(params, base_params) or "triple loss (reference)"


def heldout_table(profile, root=None, baseline_run=paper.STUDENT):
    """Every model of a profile's stage 2 on the held-out masks: tokens seen, masked-token accuracy (%), KL to
    the teacher, and the accuracy change against the triple-loss run of the same budget (same_budget_base) with
    HELDOUT_RULE's verdict. None when the stage recorded no held-out measures."""
    import pandas as pd
    measured = heldout_measures(profile, root, baseline_run)
    base = measured.get(baseline_run)
    if not measured or base is None:
        return None
    runs = distill_runs(profile, root)
    base_params = _run_params(runs[baseline_run])
    rows, index = [], []
    for name, point in measured.items():
        against = same_budget_base(runs, name, baseline_run)
        change, bound, ok = heldout_change(point, measured.get(against, base))
        index.append(_heldout_label(name, _run_params(runs[name]) if name in runs else {}, base_params))
        rows.append({"model": name, "tokens seen": point.get("tokens"),
                     "masked-token accuracy (%)": 100.0 * point["mlm_accuracy"],
                     "KL to teacher (nats)": point["kl_to_teacher"],
                     "change against": None if name == baseline_run else against,
                     "accuracy change (points)": None if name == baseline_run else change,
                     "2 SE (points)": None if name == baseline_run else bound,
                     "resolved": None if name == baseline_run else ("yes" if ok else "no"),
                     "masked targets": point["n_tokens"]})
    table = pd.DataFrame(rows, index=pd.Index(index, name="variant"))
    # a count: whole numbers, not the float column a missing teacher entry would make of it
    return table.astype({"tokens seen": "Int64"})


def late_gain(curve, share=0.25):
    """(points of held-out masked-token accuracy gained over the last ``share`` of a learning curve, the step it is
    measured from, the last step): the distillation steps' rule reads it (params/<profile>/02_distill.yaml). The
    start is the last point at or before (1 - share) x the last step. None with fewer than two points."""
    if not curve or len(curve) < 2:
        return None
    last = curve[-1]
    start = [p for p in curve if p["step"] <= (1 - share) * last["step"]][-1]
    return 100.0 * (last["mlm_accuracy"] - start["mlm_accuracy"]), start["step"], last["step"]


def heldout_curves(profile, root=None):
    """({run: heldout_curve}, {reference model: measures}) for plots.heldout_curves; ({}, {}) when none."""
    runs = distill_runs(profile, root)
    curves = {name: rec.heldout_curve for name, rec in runs.items() if rec.heldout_curve}
    reference = next((rec.heldout_reference for rec in runs.values() if rec.heldout_reference), None) or {}
    return curves, reference


def heldout_note(measured, variant, base=paper.STUDENT):
    """One sentence for a scorecard note: the held-out masked-token accuracy change of run ``variant`` against
    run ``base`` (or a reference model the main run recorded), from ``measured`` (heldout_measures), '' when either
    was not measured."""
    if variant not in measured or base not in measured:
        return ""
    change, bound, ok = heldout_change(measured[variant], measured[base])
    return (f"held-out masked-token accuracy {change:+.1f} pts (2 SE {bound:.1f}: "
            f"{'resolved' if ok else 'not resolved'}, one distillation run each)")


# ------------------------------------------------------------------------------------------- teacher logits

def teacher_logits(root=None):
    """(profile, record) of the largest-scale results/<profile>/teacher_logits.json, or None. The record holds
    ``tokens`` and ``logits`` (the teacher's top-k vocabulary logits at one masked position) and ``text``."""
    found = [(p, r) for p, r in available(config.TEACHER_LOGITS, root) if r.logits and r.tokens]
    return found[-1] if found else None




# ------------------------------------------------------------------------------------------- uncertainty

RESOLUTION_RULE = ("A difference between two seeded results is called resolved when its size exceeds the larger of "
                   "the two results' seed ranges (max - min across fine-tuning seeds, degenerate single-class runs "
                   "left out); otherwise it is not resolved at that scale. One rule, lib.report.resolved, is used "
                   "on every page that says 'resolved'.")


def resolved(difference, *ranges):
    """The book's one rule for "resolved" (RESOLUTION_RULE): |difference| > the largest of ``ranges`` (seed ranges,
    same units). None when the difference or every range is unknown (a single seed has no noise estimate)."""
    known = [r for r in ranges if r is not None and not _isnan(r)]
    if difference is None or _isnan(difference) or not known:
        return None
    return abs(difference) > max(known)


def _runs(profile, name, root=None):
    """{model: {task: {seed: FinetuneRun}}} of results/<profile>/<name>/ (empty when the folder is absent)."""
    table = {}
    for run in results.read_runs(root_dir(root) / profile / name):
        table.setdefault(run.model, {}).setdefault(run.task, {})[run.seed] = run
    return table


def _constant_score(task, rate, label):
    """The task score (x100) of always answering the majority label, whose rate (percent) is ``rate``: accuracy
    tasks score the rate, acc/F1 tasks the mean of the rate and the F1 of that answer (0 when the majority label is
    the negative class 0), MCC and correlations 0."""
    spec = glue.TASKS.get(task)
    if spec is None:  # IMDb: accuracy
        return rate
    if spec.regression or spec.metrics == ("matthews",):
        return 0.0
    if rate is None:
        return None
    if spec.metrics == ("accuracy",):
        return rate
    if label is None:
        return None
    p = rate / 100.0
    f1 = 2 * p / (1 + p) if label == 1 else 0.0
    return (rate + 100.0 * f1) / 2


def task_floors(profile, name=config.GLUE, root=None):
    """{task: (floor, how)}: the score of a constant (majority-class) answer on each task's dev set. From the runs'
    majority_rate / majority_label when recorded (lib.finetune); for results written before those fields, the best
    score any run that predicted a single class reached (a constant answer's score, so at most the majority
    floor); MCC and correlations: 0. A task with none of these is absent (floor unknown)."""
    floors = {t: (0.0, "a constant answer's MCC / correlation") for t, spec in glue.TASKS.items()
              if spec.regression or spec.metrics == ("matthews",)}
    record = load(profile, name, root)
    for row in _summary_rows(record) if record else []:  # summaries from lib.finetune.summarize with majority_rate
        rate = row.get("majority_rate")
        spec = glue.TASKS.get(row.get("task"))
        if rate is not None and not _isnan(rate) and (spec is None or spec.metrics == ("accuracy",)):
            floors[row["task"]] = (float(rate), "majority class")
    analytic = set(floors)
    for model, tasks in _runs(profile, name, root).items():
        for task, seeds in tasks.items():
            if task in analytic:
                continue
            for run in seeds.values():
                split = next(iter(run.predictions.values()), None) or {}
                floor = _constant_score(task, run.majority_rate, split.get("majority_label"))
                if floor is not None:
                    floors[task] = (floor, "majority class")
                elif task not in floors or floors[task][1] != "majority class":
                    if _run_single_class(run):
                        best = max(run.score, floors.get(task, (run.score, ""))[0])
                        floors[task] = (best, "best single-class run (majority rate not recorded)")
    return floors


COUNTED_RULE = ("a GLUE task counts toward a scale's GLUE score only when the teacher's median dev score beats the "
                "task's majority-class floor (a constant answer's score; MCC 0 on CoLA, correlation 0 on STS-B) by "
                "at least 5 points; the other tasks are listed with the reason and never averaged in, and the "
                "paper's score is then taken on the same tasks.")


def counted_tasks(profile, name=config.GLUE, root=None, teacher=paper.TEACHER, margin=5.0):
    """Which tasks count toward a scale's GLUE score, and why the others do not: (counted, {task: reason}).

    The rule: a task counts when the teacher's median score beats the task's majority-class floor (task_floors)
    by at least ``margin`` points (5); on CoLA the floor is MCC 0, so the teacher must reach MCC > 0 and, with
    the margin, at least 5. A task whose floor is unknown, or the teacher did not run, does not count. Zeros of
    tasks nobody learned are thus never averaged into the score."""
    record = load(profile, name, root)
    if record is None:
        return [], {}
    floors = task_floors(profile, name, root)
    scores = glue_scores(record).get(teacher, {})
    counted, excluded = [], {}
    for task in glue_tasks(record):
        score, (floor, how) = scores.get(task), floors.get(task, (None, None))
        label = paper.TASK_NAMES.get(task, task)
        if score is None:
            excluded[task] = f"{label}: the teacher was not fine-tuned on it"
        elif floor is None:
            excluded[task] = f"{label}: majority-class floor unknown (no single-class run, rate not recorded)"
        elif score - floor < margin:
            excluded[task] = (f"{label}: teacher {score:.1f} against a floor of {floor:.1f} ({how}): "
                              f"less than {margin:g} points above it")
        else:
            counted.append(task)
    return counted, excluded


# ------------------------------------------------------------------------------------------- derived figures
# One function per figure the book shows on more than one page, named by its statistic and its task set: every
# page and table that shows the figure calls its function, and prints the task set (task_set_label) beside it.

def task_set_label(tasks):
    """The names of a task set, as the pages print them beside a figure over it: 'SST-2, STS-B'."""
    return ", ".join(paper.TASK_NAMES.get(t, t) for t in tasks) or "none"


def _glue_context(profile, root=None):
    """What the counted-GLUE figures read: (counted tasks, {model: {task: median}}, {model: {seed: counted macro}})."""
    record = load(profile, config.GLUE, root)
    counted = counted_tasks(profile, root=root)[0] if record else []
    if not counted:
        return [], {}, {}
    return counted, glue_scores(record), seed_scores(profile, root=root, tasks=counted)


def _counted_score(context, model):
    counted, medians, _ = context
    values = [(medians.get(model) or {}).get(t) for t in counted]
    return _mean(values) if counted and None not in values else None


def _counted_range(context, model):
    return seed_range(list((context[2].get(model) or {}).values()))


def counted_glue_score(profile, model, root=None):
    """(GLUE score over the counted tasks, counted tasks): the macro average over counted_tasks of ``model``'s
    per-task medians over seeds, the paper's statistic (Table 1's score column). None when no task counts or the
    model lacks one of them."""
    context = _glue_context(profile, root)
    return _counted_score(context, model), context[0]


def counted_glue_seed_range(profile, model, root=None):
    """(max - min over seeds of ``model``'s per-seed macro average over the counted tasks, counted tasks): the
    seed noise of counted_glue_score. None with a single seed."""
    context = _glue_context(profile, root)
    return _counted_range(context, model), context[0]


def _change(context, model, base):
    a, b = _counted_score(context, model), _counted_score(context, base)
    ranges = [r for r in (_counted_range(context, model), _counted_range(context, base)) if r is not None]
    return (a - b if None not in (a, b) else None), (max(ranges) if ranges else None)


def counted_glue_change(profile, model, base, root=None):
    """(counted_glue_score of ``model`` minus that of ``base`` in points, the larger of their counted seed ranges,
    counted tasks): what Table 4 and the scorecard's change rows show (e.g. distilled - undistilled)."""
    context = _glue_context(profile, root)
    return (*_change(context, model, base), context[0])


def counted_glue_retention(profile, root=None, student=paper.STUDENT, teacher=paper.TEACHER):
    """(counted_glue_score of ``student`` / that of ``teacher`` in %, counted tasks, the paper's DistilBERT /
    BERT-base retention on the same tasks): Table 1's retention rows, the scorecard, the headline and the CPU
    page. (None, [], None) when no task counts."""
    context = _glue_context(profile, root)
    if not context[0]:
        return None, [], None
    ours = retention_percent(_counted_score(context, student), _counted_score(context, teacher))
    return ours, context[0], paper_glue_retention(context[0])[GLUE_SCORE]


def encoder_parameters_m(profile, model, root=None):
    """Parameters (millions) of ``model``'s encoder without the MLM head, as stage 5 counted it (latency.json's
    Table 3 rows: BertModel with its pooler, DistilBertModel; the paper's Table 3 counts the same way). None when
    stage 5 did not count it. Stages 1 and 2 count their masked-LM models, head included: never shown."""
    record = load(profile, config.LATENCY, root)
    return (latency_models(record).get(model) or {}).get("params_m") if record else None


def encoder_parameter_ratio(profile, small, large, root=None):
    """encoder_parameters_m of ``small`` / that of ``large`` in %: (DistilBERT, BERT-base) for the paper's shapes,
    (student, teacher) for this scale's trained pair."""
    return retention_percent(encoder_parameters_m(profile, small, root), encoder_parameters_m(profile, large, root))


def paper_parameter_ratio():
    """The paper's DistilBERT / BERT-base parameters in % (Table 3: encoders without the MLM head)."""
    return retention_percent(paper.TABLE3[paper.DISTILBERT]["params_m"], paper.TABLE3[paper.BERT_BASE]["params_m"])


def paper_time_ratio():
    """The paper's DistilBERT / BERT-base inference time in % (Table 3)."""
    return retention_percent(paper.TABLE3[paper.DISTILBERT]["seconds"], paper.TABLE3[paper.BERT_BASE]["seconds"])


def seed_scores(profile, name=config.GLUE, root=None, tasks=None):
    """{model: {seed: score}}: each seed's macro average over ``tasks`` (default: every task a model ran), from the
    per-run files; a seed missing a task is left out."""
    out = {}
    for model, per_task in _runs(profile, name, root).items():
        wanted = list(tasks) if tasks is not None else list(per_task)
        if not wanted or any(t not in per_task for t in wanted):
            continue
        seeds = set.intersection(*(set(per_task[t]) for t in wanted))
        out[model] = {s: sum(per_task[t][s].score for t in wanted) / len(wanted) for s in sorted(seeds)}
    return out


def spread(values):
    """(median, min, max) of a list of numbers, or (None, None, None) when empty."""
    import statistics
    values = [v for v in values if v is not None]
    return (statistics.median(values), min(values), max(values)) if values else (None, None, None)


def seed_range(values):
    median, low, high = spread(values)
    return high - low if median is not None and len(values) > 1 else None


def task_noise(profile, name=config.GLUE, root=None):
    """Median over (model, task) of a task score's seed range (points), leaving out every (model, task) where some
    seed predicted a single class: a constant answer's zero range would pull the noise down. None: no such pair
    with several seeds."""
    import statistics
    ranges = []
    for model, per_task in _runs(profile, name, root).items():
        for task, seeds in per_task.items():
            if any(_run_single_class(r) for r in seeds.values()):
                continue
            r = seed_range([run.score for run in seeds.values()])
            if r is not None:
                ranges.append(r)
    return statistics.median(ranges) if ranges else None


REAL_SCALES = ("paper", "t4", "gpu", "cpu")  # largest first; the smoke scale checks the pipeline and never gives a verdict


# ------------------------------------------------------------------------------------------- figure data

def retention_span(model_values, teacher_values):
    """(low, high) retention in % from both models' seed spreads: the smallest and the largest of
    100 x (the model's min or max over seeds) / (the teacher's min or max over seeds). None when either side has no
    value or the teacher's smallest value is not above 0 (the ratio is then unbounded)."""
    m = [v for v in model_values if v is not None]
    t = [v for v in teacher_values if v is not None]
    if not m or not t or min(t) <= 0:
        return None
    corners = [retention_percent(a, b) for a in (min(m), max(m)) for b in (min(t), max(t))]
    return min(corners), max(corners)


def _with_value(span, value):
    """A (low, high) span widened to hold ``value`` (a median of medians can sit outside the per-seed range)."""
    if span is None or value is None:
        return span
    return min(span[0], value), max(span[1], value)


def glue_retention_figure(profile, root=None, models=(paper.STUDENT, "undistilled")):
    """(series, errors) of one scale's GLUE retention figure (plots.grouped_bars): per counted task and the GLUE
    score over the counted tasks (counted_glue_retention), each model's median / the teacher's median (%), with
    retention_span over both models' seeds as the error bar, beside the paper's retention on the same tasks. One
    scale per figure: scales have different teachers. ({}, {}) when no task counts."""
    context = _glue_context(profile, root)
    counted, scores, macro = context
    if not counted:
        return {}, {}
    label = {t: paper.TASK_NAMES.get(t, t) for t in counted}
    glue_label = f"GLUE ({task_set_label(counted)})"
    ref = paper_glue_retention(counted)
    series = {"paper: DistilBERT / BERT-base, same tasks": {**{label[t]: ref[t] for t in counted},
                                                             glue_label: ref[GLUE_SCORE]}}
    errors = {}
    runs = _runs(profile, config.GLUE, root)
    teacher = scores.get(paper.TEACHER) or {}

    def seeds(model, task):
        return [r.score for r in (runs.get(model) or {}).get(task, {}).values()]

    for model in models:
        if model not in scores or not teacher:
            continue
        name = f"{profile}: {model} / teacher"
        series[name] = {label[t]: retention_percent(scores[model].get(t), teacher.get(t)) for t in counted}
        series[name][glue_label] = counted_glue_retention(profile, root, student=model)[0]
        errors[name] = {label[t]: retention_span(seeds(model, t), seeds(paper.TEACHER, t)) for t in counted}
        errors[name][glue_label] = retention_span(list((macro.get(model) or {}).values()),
                                                  list((macro.get(paper.TEACHER) or {}).values()))
        errors[name] = {k: _with_value(span, series[name].get(k)) for k, span in errors[name].items()}
    return series, errors


def downstream_retention_figure(profile, root=None, models=(paper.STUDENT, "undistilled")):
    """(series, errors) of one scale's IMDb / SQuAD retention figure, as glue_retention_figure."""
    record = load(profile, config.IMDB_SQUAD, root)
    if record is None:
        return {}, {}
    labels = {"imdb_accuracy": "IMDb acc", "squad_exact_match": "SQuAD EM", "squad_f1": "SQuAD F1"}
    ours = downstream_scores(record)
    teacher = ours.get(paper.TEACHER) or {}
    present = [c for c in labels if teacher.get(c) is not None]
    if not present:
        return {}, {}
    ref = paper_downstream_retention()
    series = {"paper: DistilBERT / BERT-base": {labels[c]: ref[c] for c in present}}
    errors = {}
    rows = _summary_rows(record)
    task_metric = {"imdb_accuracy": (IMDB, "accuracy"), "squad_exact_match": (SQUAD, "exact_match"),
                   "squad_f1": (SQUAD, "f1")}
    for model in models:
        if model not in ours:
            continue
        name = f"{profile}: {model} / teacher"
        series[name] = {labels[c]: retention_percent(ours[model][c], teacher[c]) for c in present}
        errors[name] = {labels[c]: _with_value(retention_span(
            [_value(rows, model, *task_metric[c], s) for s in ("min", "max")],
            [_value(rows, paper.TEACHER, *task_metric[c], s) for s in ("min", "max")]), series[name][labels[c]])
            for c in present}
    return series, errors


def ablation_figure(profile, root=None):
    """(series, errors) of one scale's Table 4 figure: each variant's counted_glue_change against the triple loss,
    beside the paper's change (over its nine tasks), each series named with its task set. Error bar: from the
    variant's smallest per-seed counted score minus the triple loss's largest to its largest minus the triple
    loss's smallest (both seed spreads)."""
    table = ablation_table(profile, root)
    counted, _, macro = _glue_context(profile, root)
    glue = load(profile, config.GLUE, root)
    base = list((macro.get(_glue_label_for(paper.STUDENT, glue) if glue else None) or {}).values())
    values, spans = {}, {}
    for variant, row in table.iterrows():
        change = row["change (points)"]
        if variant not in paper.TABLE4 or change is None or change != change:
            continue
        values[variant] = change
        seeds = list((macro.get(_glue_label_for(row["run"], glue) if glue else None) or {}).values())
        span = (min(seeds) - max(base), max(seeds) - min(base)) if seeds and base else None
        spans[variant] = _with_value(span, change)
    if not values:
        return {}, {}
    ours = f"{profile} ({task_set_label(counted)})"
    return {f"paper ({len(paper.GLUE_TASKS)} tasks)": dict(paper.TABLE4), ours: values}, {ours: spans}
