"""Stage parameters: one plain dataclass per stage, filled from a named profile and checked up front.

A profile is a folder of YAML files, ``params/<profile>/<stage>.yaml`` (smoke, cpu, t4, paper). A stage
notebook's ``parameters`` cell lists every field below set to ``None`` ("take the profile's value"); papermill
``-p name value`` / ``-f file.yaml`` or an edit in Colab overrides single fields. ``load_params`` merges the
two, rejects unknown names, wrong types and impossible values with one error naming the parameter, and does
so before the stage computes anything. Each field carries its one-line help (``param``), which --help, the
parameters cells and the method page show; with a class per stage that makes this module over 400 lines.
"""
import copy
import dataclasses
import errno
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lib import REPO_ROOT, glue, paper, repo_path

PARAMS_DIR = REPO_ROOT / "params"
PROFILES = ("smoke", "cpu", "t4", "paper", "gpu")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
ADAPT_MLM = ("auto", "always", "never")  # when stage 1 trains the teacher's MLM head (lib.teacher.needs_adaptation)


class ParameterError(ValueError):
    """A stage parameter is unknown, of the wrong type or impossible."""

    def __init__(self, name, message):
        self.name = name
        super().__init__(f"parameter {name!r}: {message}")


def param(default, help):
    """A stage parameter: its default and what it means in one line, which ``python -m lib.pipeline --help``, the
    notebooks' parameters cells and the book's method page show. A list or dict default is copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def parameter_help(cls):
    """[(name, default, help)] of a parameter class's fields, in their order."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f.name, default, f.metadata.get("help", "")))
    return rows


@dataclass
class StageParams:
    profile: str = param("smoke", "named parameter set, params/<profile>/: smoke, cpu, t4 (a Colab GPU), paper")
    mirror: str | None = param(None, "local hub mirror folder (else $DISTILBERT_MIRROR, else the hub)")
    seed: int = param(56, "random seed (56: the authors')")
    run_dir: str = param("", "checkpoints and models (big, not committed); default runs/<profile>, on Colab Drive")
    results_dir: str = param("", "small JSON results with provenance; default results/<profile>, on Colab Drive")

    def validate(self):
        _finite(self)  # first: NaN passes every comparison of the checks below (nan <= 0 is False)
        if self.profile not in PROFILES and not (PARAMS_DIR / self.profile).is_dir():
            raise ParameterError("profile", f"{self.profile!r} is not one of {PROFILES} (no folder {PARAMS_DIR / self.profile})")
        from lib.colab import default_dir  # runs/<profile>, or a Drive folder on Colab
        self.run_dir = self.run_dir or default_dir("runs", self.profile)
        self.results_dir = self.results_dir or default_dir("results", self.profile)
        for f in dataclasses.fields(self):  # "{run_dir}/teacher": a model an earlier stage wrote into this run
            value = getattr(self, f.name)
            if isinstance(value, str) and f.name != "run_dir":
                setattr(self, f.name, value.replace("{run_dir}", self.run_dir))
            elif isinstance(value, dict):
                setattr(self, f.name, {k: v.replace("{run_dir}", self.run_dir) if isinstance(v, str) else v
                                       for k, v in value.items()})
        if self.mirror is not None:
            from lib.hub import mirror_dir
            try:
                mirror_dir(self.mirror)
            except FileNotFoundError as err:
                raise ParameterError("mirror", str(err)) from None

    def path(self, name):
        """A run_dir/results_dir value as an absolute path (relative ones are relative to the repo root)."""
        return repo_path(getattr(self, name))


@dataclass
class TeacherParams(StageParams):
    teacher: str = param("google-bert/bert-base-uncased", "masked-LM teacher (BERT architecture): hub id or path")
    corpus: list = param([], "text sources: [{id, name?, split, column}] (datasets) or [{path}] (text files)")
    max_length: int = param(128, "tokens per sequence (longer text is cut into chunks)")
    heldout_fraction: float = param(0.05, "share of corpus sequences kept aside for the masked-LM check")
    eval_sequences: int = param(256, "held-out sequences for masked-token accuracy and perplexity")
    adapt_mlm: str = param("auto", "train the MLM head: auto (only when the checkpoint has none), always, never")
    adapt_steps: int = param(0, "optimizer steps of the MLM-head adaptation")
    adapt_top_layers: int | list = param(0, "top layers trained with the MLM head; a list: each tried, best kept")
    adapt_eval_every: int = param(0, "steps between scores on the selection sequences; 0: start, end only")
    adapt_learning_rate: float = param(1e-4, "learning rate of the MLM-head adaptation")
    batch_size: int = param(32, "sequences per batch (adaptation and evaluation)")
    precision: str = param("auto", "auto (bf16 on capability >= 8, fp16 below, fp32 on CPU), fp32, fp16, bf16")
    recompute: bool = param(False, "prepare the teacher again even when the saved one was made with these parameters")

    def validate(self):
        super().validate()
        _one_of("adapt_mlm", self.adapt_mlm, ADAPT_MLM)
        _one_of("precision", self.precision, PRECISIONS)
        _positive(self, "max_length", "eval_sequences", "batch_size")
        _fraction("heldout_fraction", self.heldout_fraction)
        layers = self.adapt_top_layers if isinstance(self.adapt_top_layers, list) else [self.adapt_top_layers]
        if not layers or any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in layers):
            raise ParameterError("adapt_top_layers", f"give a number of top layers >= 0, or a list of them, got "
                                                     f"{self.adapt_top_layers!r}")
        if self.adapt_eval_every < 0:
            raise ParameterError("adapt_eval_every", f"must be >= 0, got {self.adapt_eval_every}")
        _check_corpus(self.corpus)


@dataclass
class DistillParams(StageParams):
    run_name: str = param("student", "the student is saved to <run_dir>/<run_name> (ablations use their own names)")
    teacher: str = param("google-bert/bert-base-uncased", "the teacher: hub id or path ({run_dir}/teacher: stage 1's)")
    student_layers: list | None = param(None, "teacher layers copied into the student; None: spread evenly")
    n_student_layers: int | None = param(None, "student depth; None: half the teacher's layers")
    random_init: bool = param(False, "ablation: a random student (drawn from seed) instead of teacher layers")
    corpus: list = param([], "text sources: [{id, name?, split, column}] (datasets) or [{path}] (text files)")
    max_length: int = param(512, "tokens per sequence (longer text is cut into chunks)")
    min_length: int = param(12, "shorter sequences are dropped (the release drops <= 11 tokens)")
    # the triple loss (released weights): one alpha_<term> per term of lib.losses.TERMS
    alpha_ce: float = param(5.0, "weight of the distillation loss (KL on temperature-softened outputs)")
    alpha_mlm: float = param(2.0, "weight of the masked-LM loss")
    alpha_cos: float = param(1.0, "weight of the cosine loss between hidden states")
    alpha_mse: float = param(0.0, "extension: weight of an MSE loss on the logits")
    temperature: float = param(2.0, "softmax temperature of the distillation loss")
    restrict_ce_to_mask: bool = param(False, "distillation loss on masked positions only (off in the release)")
    cos_layers: str = param("last", "cosine loss on the last hidden layer, or all: every mapped layer (extension)")
    # masking
    mlm_mask_prop: float = param(0.15, "share of tokens that are prediction targets")
    word_mask: float = param(0.8, "share of targets replaced by [MASK]")
    word_keep: float = param(0.1, "share of targets kept unchanged")
    word_rand: float = param(0.1, "share of targets replaced by a random token")
    mlm_smoothing: float = param(0.7, "targets drawn with probability ~ max(count, 1) ** -mlm_smoothing")
    # optimisation
    learning_rate: float = param(5e-4, "AdamW peak learning rate")
    adam_betas: list = param([0.9, 0.98], "AdamW betas")
    adam_epsilon: float = param(1e-6, "AdamW epsilon")
    weight_decay: float = param(0.0, "AdamW weight decay (never on biases and LayerNorms)")
    warmup_prop: float = param(0.05, "share of the steps with linear warmup, then linear decay")
    n_epoch: int = param(3, "passes over the corpus")
    max_steps: int | None = param(None, "optimizer steps; None: n_epoch passes over the corpus")
    batch_size: int = param(5, "sequences per micro-batch per device")
    gradient_accumulation_steps: int = param(50, "micro-batches per optimizer step per device")
    effective_batch_size: int | None = param(None, "sequences per optimizer step, all devices (accumulation adapts)")
    max_grad_norm: float = param(5.0, "gradient clipping norm")
    precision: str = param("auto", "auto (bf16 on capability >= 8, fp16 below, fp32 on CPU), fp32, fp16, bf16")
    checkpoint_every: int = param(500, "optimizer steps between checkpoints")
    resume: bool = param(True, "continue from the last checkpoint in run_dir/<run_name> when there is one")
    resume_with_changes: bool = param(False, "allow a resume with other lr, loss weights, ... (recorded per segment)")
    log_every: int = param(10, "optimizer steps between log records")
    # intrinsic measures of every run (main, undistilled, ablations) on the same held-out sequences and masks
    heldout_sequences: int = param(0, "sequences held out of training for masked-token accuracy and KL to the teacher; 0: none")
    eval_every: int = param(0, "optimizer steps between held-out evaluations (the learning curve); 0: at the end only")
    # more runs of the same stage (after the main one, same corpus and teacher)
    undistilled_name: str | None = param(None, "also save the student as initialised (never distilled) to run_dir/<name>")
    ablations: dict = param({}, "run_name -> {parameter: value}, e.g. {no-ce: {alpha_ce: 0}}: one run each")

    def validate(self):
        super().validate()
        _check_corpus(self.corpus)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("cos_layers", self.cos_layers, ("last", "all"))
        _positive(self, "max_length", "min_length", "temperature", "learning_rate", "n_epoch", "batch_size",
                  "gradient_accumulation_steps", "max_grad_norm", "checkpoint_every", "log_every")
        weights = self.weight_names()
        for name in (*weights, "heldout_sequences", "eval_every"):
            if getattr(self, name) < 0:
                raise ParameterError(name, f"must be >= 0, got {getattr(self, name)}")
        if not any(getattr(self, name) for name in weights):
            raise ParameterError(weights[0], "all loss weights are 0: nothing to train")
        _fraction("mlm_mask_prop", self.mlm_mask_prop)
        if abs(self.word_mask + self.word_keep + self.word_rand - 1) > 1e-6:
            raise ParameterError("word_mask", "word_mask + word_keep + word_rand must sum to 1")
        if self.effective_batch_size is not None and (self.effective_batch_size <= 0 or self.effective_batch_size % self.batch_size):
            raise ParameterError("effective_batch_size", f"must be a positive multiple of batch_size {self.batch_size}, got {self.effective_batch_size}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ParameterError("max_steps", f"must be > 0 or None, got {self.max_steps}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ParameterError("adam_betas", f"must be two numbers in [0, 1), got {self.adam_betas}")
        _fraction("warmup_prop", self.warmup_prop, allow_zero=True)
        if self.min_length >= self.max_length:
            raise ParameterError("min_length", f"{self.min_length} must be < max_length {self.max_length}")
        if self.student_layers is not None:
            layers = self.student_layers
            if not layers or sorted(set(layers)) != list(layers) or min(layers) < 0:
                raise ParameterError("student_layers", f"must be increasing distinct layer indices, got {layers}")
            if self.n_student_layers is not None and self.n_student_layers != len(layers):
                raise ParameterError("n_student_layers", f"{self.n_student_layers} != len(student_layers) {len(layers)}")
        names = [self.run_name, self.undistilled_name, *self.ablations]
        if len(set(names)) != len(names):
            raise ParameterError("ablations", f"run names must differ: run_name, undistilled_name and ablations {names}")
        for name in self.ablations:
            self.variant(name)

    @classmethod
    def weight_names(cls):
        """The loss weights, alpha_<term>: read from the fields, so that this module need not import lib.losses
        (torch); tests/test_losses.py checks that they are the registry's."""
        return [f.name for f in dataclasses.fields(cls) if f.name.startswith("alpha_")]

    def variant(self, name):
        """The parameters of ablation run ``name``: these ones with its changes applied, validated alike."""
        changes = self.ablations[name]
        if not isinstance(changes, dict) or not changes:
            raise ParameterError("ablations", f"{name!r}: give the changed parameters as a mapping, got {changes!r}")
        fixed = {"run_name", "undistilled_name", "ablations", "profile", "run_dir", "results_dir", "teacher", "corpus",
                 "heldout_sequences"}
        for key in changes:
            if key in fixed:
                raise ParameterError("ablations", f"{name!r} cannot change {key!r}: ablations share the stage's "
                                                  "teacher, corpus, held-out sequences and folders")
        values = {**dataclasses.asdict(self), **changes, "run_name": name, "undistilled_name": None, "ablations": {}}
        try:
            return make_params(DistillParams, values)
        except ParameterError as err:
            raise ParameterError("ablations", f"{name!r}: {err}") from None

    def check_teacher_depth(self, n_teacher_layers):
        """Once the teacher's config is known: the student cannot be deeper than its teacher."""
        n = len(self.student_layers) if self.student_layers else self.n_student_layers
        if n is not None and not 0 < n <= n_teacher_layers:
            raise ParameterError("n_student_layers" if not self.student_layers else "student_layers",
                                 f"the student needs 1..{n_teacher_layers} layers (teacher depth), got {n}")
        if self.student_layers and max(self.student_layers) >= n_teacher_layers:
            raise ParameterError("student_layers", f"teacher has layers 0..{n_teacher_layers - 1}, got {self.student_layers}")


# the fine-tuning settings a task may set for itself (task_overrides), and how the book says them
TRAINING_SETTINGS = {"learning_rate": "learning rate", "n_epoch": "epochs", "batch_size": "batch size",
                     "warmup_prop": "warmup share", "weight_decay": "weight decay"}


@dataclass
class EvalParams(StageParams):
    models: dict = param({}, "label -> model id or path, e.g. {teacher: ..., student: ...}")
    seeds: list = param([42], "one fine-tuning run per seed")
    learning_rate: float = param(5e-5, "AdamW peak learning rate")
    n_epoch: float = param(3.0, "epochs of fine-tuning")
    batch_size: int = param(32, "sequences per batch")
    warmup_prop: float = param(0.1, "share of the steps with linear warmup, then linear decay")
    weight_decay: float = param(0.0, "AdamW weight decay")
    max_train_samples: int | None = param(None, "training examples per task at most (None: all)")
    max_eval_samples: int | None = param(None, "evaluation examples per task at most (None: all)")
    precision: str = param("auto", "auto (bf16 on capability >= 8, fp16 below, fp32 on CPU), fp32, fp16, bf16")
    recompute: bool = param(False, "re-run (model, task, seed) results that already exist")
    task_overrides: dict = param({}, "task -> {name: value} for the fields above, e.g. {squad: {n_epoch: 2}}")
    distill_teacher: str = param(paper.TEACHER, "label in models whose fine-tuned copy teaches the (D) runs")
    group_by_length: bool = param(False, "batches of rows of similar length: less padding, faster")
    # the budget rule (lib.budget_rule), measured on train-split rows held out of training, never the dev split
    heldout_rows: int = param(0, "train-split rows kept out of training, scored after each run; 0: none")
    budget_ladder: dict = param({}, "task -> rising max_train_samples; the first where the teacher reaches its target is used")
    budget_margin: float = param(10.0, "a rung's target: held-out constant-answer floor + this many points")
    budget_targets: dict = param({}, "task -> held-out score to reach instead (SQuAD F1: no constant answer)")

    def validate(self):
        super().validate()
        if not self.models:
            raise ParameterError("models", "name at least one model to evaluate, e.g. {student: runs/smoke/student}")
        if not self.seeds:
            raise ParameterError("seeds", "give at least one seed")
        _one_of("precision", self.precision, PRECISIONS)
        _positive(self, "learning_rate", "n_epoch", "batch_size")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ParameterError(name, f"must be > 0 or None, got {getattr(self, name)}")
        if self.heldout_rows < 0:
            raise ParameterError("heldout_rows", f"must be >= 0, got {self.heldout_rows}")
        from lib.budget_rule import check_ladder
        check_ladder(self)


@dataclass
class GlueParams(EvalParams):
    glue_dataset: str = param("nyu-mll/glue", "GLUE dataset id")
    tasks: list = param(list(glue.TASKS), "task names (lib.tasks): the GLUE tasks, or any registered sentence task")
    max_length: int = param(128, "tokens per example")
    task_distill: bool = param(False, "extension: distil from a fine-tuned teacher during fine-tuning")
    task_alpha: float = param(0.5, "task_distill: task_alpha * task loss + (1 - task_alpha) * T^2 * KL")
    temperature: float = param(2.0, "softmax temperature of task_distill")

    def validate(self):
        super().validate()
        for task in self.tasks:
            _one_of("tasks", task, _stage_tasks(type(self)))
        _positive(self, "max_length")


def _stage_tasks(cls):
    """The registered tasks a fine-tuning stage can run: classification or regression heads whose data this
    stage's parameters can name (no dataset parameter, or one of ``cls``'s fields)."""
    from lib import tasks
    fields = {f.name for f in dataclasses.fields(cls)}
    return [name for name, task in tasks.TASKS.items()
            if task.head != tasks.QA and (task.dataset_param is None or task.dataset_param in fields)]


@dataclass
class ImdbSquadParams(EvalParams):
    imdb_dataset: str = param("stanfordnlp/imdb", "IMDb dataset id")
    squad_dataset: str = param("rajpurkar/squad", "SQuAD v1.1 dataset id")
    run_imdb: bool = param(True, "fine-tune and evaluate on IMDb")
    run_squad: bool = param(True, "fine-tune and evaluate on SQuAD")
    imdb_max_length: int = param(512, "tokens per IMDb review")
    imdb_truncation: str = param("head", "head | head+tail: which tokens of a long review are kept")
    squad_max_length: int = param(384, "tokens per SQuAD window")
    doc_stride: int = param(128, "tokens shared by consecutive windows of a long context")
    max_answer_length: int = param(30, "longest answer span, in tokens")
    n_best: int = param(20, "start and end candidates considered per window")
    squad_distill: bool = param(False, "the paper's DistilBERT (D): a second distillation step on SQuAD")
    squad_teacher: str | None = param(None, "teacher already fine-tuned on SQuAD (for squad_distill)")
    squad_alpha: float = param(0.5, "squad_distill: squad_alpha * CE + (1 - squad_alpha) * T^2 * KL")
    temperature: float = param(2.0, "softmax temperature of squad_distill")

    def validate(self):
        super().validate()
        _one_of("imdb_truncation", self.imdb_truncation, ("head", "head+tail"))
        _positive(self, "imdb_max_length", "squad_max_length", "doc_stride", "max_answer_length", "n_best", "temperature")
        if self.doc_stride >= self.squad_max_length:
            raise ParameterError("doc_stride", f"{self.doc_stride} must be < squad_max_length {self.squad_max_length}")
        _fraction("squad_alpha", self.squad_alpha)


@dataclass
class LatencyParams(StageParams):
    models: dict = param({}, "label -> model id or path (config-only ids are timed with random weights)")
    sentences_dataset: str = param("nyu-mll/glue", "dataset of the timed sentences (the paper: STS-B dev)")
    sentences_task: str = param(glue.STSB, "its GLUE task")
    max_examples: int | None = param(None, "sentence pairs timed; None: the whole dev set")
    batch_size: int = param(1, "sentences per forward pass")
    num_threads: int = param(0, "torch threads; 0: torch's default")
    warmup: int = param(10, "untimed calls per model first")
    repeats: int = param(3, "timed passes over the sentences (pass totals and per-example medians)")
    seq_lengths: list = param([16, 32, 64, 128, 256, 512], "sweep: sequence lengths")
    batch_sizes: list = param([1, 8, 32], "sweep: batch sizes")
    sweep_max_tokens: int | None = param(None, "skip sweep points with batch_size * seq_len above this")
    precisions: list = param(["fp32"], "sweep precisions; fp16, bf16 on GPU only (bf16: capability >= 8)")
    quantize: bool = param(True, "also time the student with int8 dynamic quantization of its Linear layers")
    device: str = param("cpu", "cpu or cuda")

    def validate(self):
        super().validate()
        if not self.models:
            raise ParameterError("models", "name at least one model to time")
        _positive(self, "batch_size", "repeats")
        if self.warmup < 0 or self.num_threads < 0:
            raise ParameterError("warmup" if self.warmup < 0 else "num_threads", "must be >= 0")


class Stage(typing.NamedTuple):
    notebook: str   # notebooks/<notebook>.py, params/<profile>/<notebook>.yaml, book/stages/<profile>/<notebook>.ipynb
    params: type    # its parameter class
    results: tuple  # the results files it writes, results/<profile>/<name>.json (distill: distill-<run_name>)
    run: str        # "module:function", its run(params, progress=True) -> result; a string, as those modules import
                    # this one and pull in torch

    def run_function(self):
        """The stage's run function, imported now."""
        import importlib
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)


# The stages, once: lib.pipeline runs them in this order (--stages names them), the notebooks and the command
# lines run them (lib.run_stage), lib.report and the book's extensions find notebooks and results files through
# it. A stage's name is also its main results file's, but distill's, which is named after each run
# (DistillParams.run_name; "student" for the main one).
TEACHER, DISTILL, GLUE, IMDB_SQUAD, LATENCY = "teacher", "distill", "glue", "imdb_squad", "latency"
DISTILL_RESULTS_PREFIX = DISTILL + "-"
TEACHER_LOGITS = "teacher_logits"  # stage 1's second results file: the teacher's fill-mask logits for one sentence
STAGES = {
    TEACHER: Stage("01_teacher", TeacherParams, (TEACHER, TEACHER_LOGITS), "lib.teacher:run"),
    DISTILL: Stage("02_distill", DistillParams, (DISTILL_RESULTS_PREFIX + DistillParams.run_name,), "lib.distill:run"),
    GLUE: Stage("03_glue", GlueParams, (GLUE,), "lib.finetune:run"),
    IMDB_SQUAD: Stage("04_imdb_squad", ImdbSquadParams, (IMDB_SQUAD,), "lib.finetune:run"),
    LATENCY: Stage("05_latency", LatencyParams, (LATENCY,), "lib.latency:run"),
}


def stage_of(params):
    """The name of the stage whose parameter class ``params`` is an instance of."""
    found = [name for name, stage in STAGES.items() if type(params) is stage.params]
    if not found:
        raise ParameterError("stage", f"{type(params).__name__} is the parameter class of no stage in STAGES")
    return found[0]


def stage_by_notebook(stem):
    """The name of the stage whose notebook is notebooks/<stem>.py."""
    found = [name for name, stage in STAGES.items() if stage.notebook == stem]
    if not found:
        raise ParameterError("stage", f"no stage has the notebook {stem!r}; notebooks: "
                                      f"{[stage.notebook for stage in STAGES.values()]}")
    return found[0]


def stage_of_results(name):
    """The stage that writes results/<profile>/<name>.json (any distill-<run_name>: distill), or None."""
    if name.startswith(DISTILL_RESULTS_PREFIX):
        return DISTILL
    return next((stage for stage, spec in STAGES.items() if name in spec.results), None)


# names an IPython kernel puts in every namespace (not parameters)
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def profile_values(profile, stage):
    """The values a profile sets for a stage (its YAML file), as a dict."""
    stem = STAGES[stage].notebook
    path = PARAMS_DIR / profile / f"{stem}.yaml"
    if not path.is_file():
        raise ParameterError("profile", f"profile {profile!r} has no parameter file {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParameterError("profile", not_utf8(path, data, err)) from None
    values = read_yaml(text, "profile", path)
    if values is None:  # an empty file, or comments only
        return {}
    if not isinstance(values, dict):
        raise ParameterError("profile", f"{path}: expected a mapping of parameter names to values, got a "
                                        f"{type(values).__name__}")
    return values


def read_yaml(text, name, source):
    """``text`` parsed as YAML; a syntax error is a ParameterError for ``name`` naming ``source`` (a file, or the
    option that gave the text) and the line and column where YAML gave up."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
        # where the unclosed quote or bracket opened, when that is elsewhere
        opened = (f" ({context} at line {start.line + 1}, column {start.column + 1})"
                  if context and start and (start.line, start.column) != (mark.line, mark.column) else "")
        raise ParameterError(name, f"{source}: {where}{problem or err}{opened}") from None


def not_utf8(path, data, err, line=None, offset=0):
    """The message for ``data`` (bytes of ``path`` from byte ``offset``; ``line``: its line number, else counted)
    that failed to decode as UTF-8 with ``err``: where the first bad byte is, and the way out."""
    line = line or data[:err.start].count(b"\n") + 1
    return (f"{path} is not UTF-8: line {line}, byte offset {offset + err.start} (0x{data[err.start]:02x}); "
            "re-encode it as UTF-8 (e.g. iconv -f <its encoding> -t UTF-8)")


def dead_link(path):
    """(link, "a symlink loop" or "a broken symlink to ...") for the nearest of ``path`` and its missing parents
    that is a symlink whose target cannot be reached, else None. Path.exists() is False for such a link, so a
    search for the nearest existing folder walks past it, and the stage only fails on its first read or write."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            return None
        if part.is_symlink():
            try:
                os.stat(part)
            except OSError as err:
                return part, ("a symlink loop" if err.errno == errno.ELOOP
                              else f"a broken symlink to {os.readlink(part)}")
    return None


def dead_link_text(path):
    """What dead_link finds on ``path``, as a message about ``path`` with the way out, or None."""
    found = dead_link(path)
    if found is None:
        return None
    link, what = found
    return f"{path}{'' if link == Path(path) else f': {link}'} is {what}; remove the link or give another path"


def load_params(stage, namespace=None, **overrides):
    """Stage parameters: the profile's file, then non-None values from ``namespace`` (a notebook's globals
    after papermill injected its parameters), then ``overrides``. Unknown names are errors, and so are names
    papermill injected that are not fields, and field names the notebook rebound to a module, class or function
    (an import that shadows a parameter would otherwise drop its value silently)."""
    if stage not in STAGES:
        raise ParameterError("stage", f"unknown stage {stage!r}; stages: {list(STAGES)}")
    cls = STAGES[stage].params
    names = {f.name for f in dataclasses.fields(cls)}
    given = {}
    for key, value in (namespace or {}).items():
        if key.startswith("_") or key in _KERNEL_NAMES:
            continue
        if isinstance(value, (types.ModuleType, type)) or callable(value):
            if key in names:
                raise ParameterError(key, f"the notebook bound this parameter's name to {value!r} before "
                                          "load_params; import it under another name")
            continue
        if value is not None:
            given[key] = value
    for key in _injected_names(namespace):
        if key not in names and not key.startswith("_"):
            raise ParameterError(key, f"unknown parameter for stage {stage!r} (papermill -p); known: {sorted(names)}")
    given.update(overrides)
    unknown = sorted(set(given) - names)
    if unknown:
        raise ParameterError(unknown[0], f"unknown parameter for stage {stage!r}; known: {sorted(names)}")
    profile = given.get("profile", "smoke")
    values = profile_values(profile, stage)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ParameterError(unknown[0], f"unknown parameter in params/{profile}/{STAGES[stage].notebook}.yaml")
    values.update(given)
    return make_params(cls, values)


def _injected_names(namespace):
    """Names assigned by papermill's injected-parameters cell (it starts with "# Parameters"), read from the
    kernel's input history: found even when a later import rebound the name."""
    import ast
    history = (namespace or {}).get("In")
    if history is None and "IPython" in sys.modules:
        shell = sys.modules["IPython"].get_ipython()
        history = shell.user_ns.get("In") if shell is not None else None
    found = []
    for source in history or []:
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        found += [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                  if isinstance(t, ast.Name)]
    return found


def make_params(cls, values):
    """Build and validate a parameter dataclass from a dict, checking each value's type (a number written as a
    string, "1e-3" from YAML 1.1 or papermill, is read as the number a numeric field expects)."""
    hints = typing.get_type_hints(cls)
    values = dict(values)
    for name, value in values.items():
        if name not in hints:
            raise ParameterError(name, f"unknown parameter; known: {sorted(hints)}")
        value = values[name] = coerce_number(value, hints[name])
        if not _has_type(value, hints[name]):
            raise ParameterError(name, f"expected {_type_name(hints[name])}, got {type(value).__name__} {value!r}")
    params = cls(**values)
    params.validate()
    return params


def coerce_number(value, hint):
    """A numeric-looking string as the int or float a field of type ``hint`` expects; anything else unchanged."""
    if not isinstance(value, str) or _has_type(value, hint):
        return value
    allowed = set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    for kind in (int, float):
        if kind in allowed:
            try:
                number = kind(value.strip())
            except ValueError:
                continue
            return number  # "nan" too: validation then names the parameter as not finite
    return value


def as_dict(params):
    return dataclasses.asdict(params)


def _has_type(value, hint):
    if hint is typing.Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _type_name(hint):
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _non_finite(value, where):
    """(where, value) of the first NaN or infinite float in ``value`` (nested lists and dicts included), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}[{key!r}]")
        if found:
            return found
    return None


def _finite(params):
    """Every float of every field, whatever its type, is finite: no parameter means anything as NaN or infinity."""
    for f in dataclasses.fields(params):
        found = _non_finite(getattr(params, f.name), f.name)
        if found:
            where, value = found
            inside = f" ({where})" if where != f.name else ""
            raise ParameterError(f.name, f"must be a finite number, got {value}{inside}")


def _one_of(name, value, allowed):
    if value not in allowed:
        raise ParameterError(name, f"{value!r} is not one of {list(allowed)}")


def _positive(params, *names):
    for name in names:
        if getattr(params, name) <= 0:
            raise ParameterError(name, f"must be > 0, got {getattr(params, name)}")


def _fraction(name, value, allow_zero=False):
    if not (0 <= value < 1 if allow_zero else 0 < value < 1):
        raise ParameterError(name, f"must be in {'[0' if allow_zero else '(0'}, 1), got {value}")


def _check_corpus(corpus):
    if not corpus:
        raise ParameterError("corpus", "name at least one text source: {id, split, column} or {path}")
    for source in corpus:
        if not isinstance(source, dict) or not ({"id", "path"} & set(source)):
            raise ParameterError("corpus", f"each source needs 'id' (dataset) or 'path' (text file), got {source!r}")
        if "path" in source:
            path = repo_path(source["path"])
            broken = dead_link_text(path)
            if broken:
                raise ParameterError("corpus", f"text file {broken}")
            if path.is_dir():
                raise ParameterError("corpus", f"text file {path} is a folder, not a file")
            if not path.is_file():
                raise ParameterError("corpus", f"text file not found: {path}")
