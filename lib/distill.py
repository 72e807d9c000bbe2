"""Stage 2 (distillation): ``run`` is the whole stage, called by notebooks/02_distill.py and by this
module's command line, in one process or in every process of a multi-GPU launch.

    python -m lib.distill --profile t4                                          # one process
    torchrun --standalone --nproc_per_node 8 -m lib.distill --profile paper     # 8 GPUs (NCCL) of one machine
    torchrun --standalone --nproc_per_node 2 -m lib.distill --profile smoke -p max_steps=4   # 2 CPU processes (gloo)
    python -m lib.distill --help                                                # the stage's parameters

The stage: tokenize the corpus, build the student once (saved first as the undistilled baseline when
undistilled_name is set), distil it (``run_distillation``: lib.training.distill, then
results/<profile>/distill-<run_name>.json), then one run per ablation, with the parameters of
params/<profile>/02_distill.yaml overridden by ``-p name=value`` (YAML values). Every process trains; the main
process (rank 0) alone reads and tokenizes the corpus first (the others then read its cache), writes the log,
checkpoints, results files and models. `accelerate launch --num_processes N -m lib.distill` starts the same
processes on GPUs, but not on CPU: `accelerate launch --cpu --num_processes 2` starts ONE process, so use torchrun
there.

The stage's `precision` parameter always decides the autocast dtype: the launcher's mixed-precision setting is
ignored. With `effective_batch_size` set, the sequences per optimizer step stay the same for any process count.
"""
import contextlib
import dataclasses
import sys
import time
from functools import partial

import numpy as np
import torch

from lib import config, data, hub, models, preflight, results
from lib.checkpoints import hold_locks, signals_interrupt
from lib.config import ParameterError
from lib.data import mlm_token_probs, special_token_ids
from lib.losses import log_fields
from lib.teacher import evaluate_mlm, load_teacher
from lib.training import accept_resume, accumulation_steps, distill, on_main_or_stop_all, weights_digest


def build_student(params, teacher):
    """The student of a DistillParams run: teacher layers copied (student_layers, n_student_layers), or with
    random_init a random one drawn from params.seed (the same whatever ran before it)."""
    return models.build_student(teacher, layers=params.student_layers, n_layers=params.n_student_layers,
                                random_init=params.random_init, seed=params.seed)


def split_heldout(dataset, params):
    """(training sequences, held-out sequences) of the tokenized corpus: params.heldout_sequences rows drawn from
    params.seed, the same for every run of the stage and never trained on; the training rows keep the corpus's
    order. heldout_sequences 0: (dataset, None)."""
    n = params.heldout_sequences
    if not n:
        return dataset, None
    if n >= len(dataset):
        raise ParameterError("heldout_sequences", f"{n} held-out sequences leave none of the corpus's "
                                                  f"{len(dataset)} to train on")
    heldout = np.sort(np.random.default_rng(params.seed).permutation(len(dataset))[:n])
    train = np.setdiff1d(np.arange(len(dataset)), heldout)
    return dataset.select(train), dataset.select(heldout)


def heldout_evaluator(params, teacher, heldout, tokenizer, progress=False):
    """The held-out measures of a student (lib.teacher.evaluate_mlm with the teacher): masked-token accuracy,
    perplexity and KL(teacher || student) at temperature 1 over the masked targets, the masks drawn uniformly
    over non-special tokens with the run's masking shares from params.seed, so every model of the stage (every
    run, every step, the undistilled student, the teacher) is measured on the same positions. None without
    held-out sequences."""
    if heldout is None:
        return None
    return partial(evaluate_mlm, dataset=heldout, tokenizer=tokenizer, teacher=teacher, batch_size=params.batch_size,
                   mlm_mask_prop=params.mlm_mask_prop, word_mask=params.word_mask, word_keep=params.word_keep,
                   word_rand=params.word_rand, seed=params.seed, precision=params.precision, progress=progress)


def run_distillation(params, teacher, dataset, tokenizer, counts=None, progress=True, student=None, heldout=None,
                     heldout_reference=None):
    """One distillation run of a stage: ``student`` (default: build_student(params, teacher)) distilled into
    run_dir/<run_name>, and results/<profile>/distill-<run_name>.json written (by the main process only: every
    process of a DDP run calls this and trains). counts: the corpus's token counts (lib.data.token_counts), to
    count once for several runs. heldout: the stage's held-out sequences (split_heldout; None: no held-out
    measures), evaluated every params.eval_every steps and at the end (heldout_curve, heldout in the record).
    heldout_reference: {model name: held-out measures} recorded with this run (the main run's: the teacher's and
    the undistilled student's). Returns the summary of ``distill`` with weights_sha1, the final student's digest."""
    from accelerate import PartialState

    started = time.perf_counter()
    token_probs = (None if counts is None
                   else mlm_token_probs(counts, params.mlm_smoothing, special_token_ids(tokenizer)))
    student = build_student(params, teacher) if student is None else student
    summary = distill(teacher, student, dataset, params, output_dir=params.path("run_dir") / params.run_name,
                      tokenizer=tokenizer, token_probs=token_probs, progress=progress,
                      evaluate=heldout_evaluator(params, teacher, heldout, tokenizer))
    accum = accumulation_steps(params, summary["world_size"])
    summary.update(weights_sha1=weights_digest(student), gradient_accumulation_steps=accum,
                   effective_batch_size=params.batch_size * accum * summary["world_size"])
    state = PartialState()
    if state.is_main_process:
        name = config.DISTILL_RESULTS_PREFIX + params.run_name
        trained = summary["resumed_from"] != summary["total_steps"]  # a finished run resumes at its end: no step
        # a resumed run counts its earlier segments' training seconds too (their loading time is not kept)
        seconds = time.perf_counter() - started + summary["earlier_wall_time_s"]
        seconds = results.wall_time(params, name, seconds, trained,
                                    lambda before: before.weights_sha1 == summary["weights_sha1"])
        record = results.write_result(
            params, config.DISTILL, seconds, name=name,
            teacher=params.teacher, student_dir=results.repo_relative(summary["output_dir"]),
            teacher_parameters=models.count_parameters(teacher), student_parameters=models.count_parameters(student),
            student_layers=getattr(student.config, "teacher_layers", None),
            **{k: summary[k] for k in ("steps", "total_steps", "steps_per_epoch", "warmup_steps", "epochs", "tokens",
                                       "tokens_per_s", "resumed_from", "precision", "world_size", "final", "segments",
                                       "weights_sha1", "gradient_accumulation_steps", "effective_batch_size")},
            log_path=results.repo_relative(summary["log_path"]), checkpoint=results.repo_relative(summary["checkpoint"]),
            loss_curve=[{k: r[k] for k in ("step", "tokens", *log_fields()) if k in r} for r in summary["log"]],
            heldout=summary["heldout_curve"][-1] if summary["heldout_curve"] else None,
            heldout_curve=summary["heldout_curve"] or None, heldout_reference=heldout_reference)
        path = params.path("results_dir") / f"{record.name}.json"
        print(f"[rank {state.process_index}] results written: {path}", flush=True)
        models.student_card(params, record)  # the saved student's README.md: what it is, its metrics, provenance
    state.wait_for_everyone()
    return summary


def check_ranks_agree(name, summary):
    """Every rank's weights digest, gathered and printed once by rank 0 (ranks printing at once interleave their
    lines on a shared stdout); different digests mean the processes trained apart, which fails the stage."""
    from accelerate import PartialState
    from accelerate.utils import gather_object
    digests = gather_object([summary["weights_sha1"]])  # in rank order
    if PartialState().is_main_process:
        print(f"{name}: steps {summary['steps']}, precision {summary['precision']}, world size "
              f"{summary['world_size']}, weights sha1 by rank: {' '.join(digests)}", flush=True)
    if len(set(digests)) > 1:
        raise RuntimeError(f"{name}: the {len(digests)} processes ended with different weights (sha1 by rank: "
                           f"{', '.join(digests)}); the distributed run is broken, do not use its results")


@dataclasses.dataclass
class DistillStage:
    """What stage 2 made."""
    teacher: object    # the BertForMaskedLM teacher
    tokenizer: object
    dataset: object    # the tokenized corpus's training sequences (datasets.Dataset)
    student: object    # the main run's student, distilled
    runs: dict         # run name -> run_distillation's summary: the main run (params.run_name), then the ablations
    undistilled_dir: object = None  # where the undistilled baseline was saved (None: undistilled_name not set)
    heldout: object = None          # the held-out sequences (None: heldout_sequences 0)
    heldout_reference: dict = None  # {teacher / undistilled_name: held-out measures} (main process; else None)


def run(params, progress=True):
    """Stage 2 for a DistillParams (lib.config.STAGES), in this process (and in every process of a torchrun
    launch): the corpus tokenized, the student built once, saved as the undistilled baseline
    (params.undistilled_name) before it is distilled (params.run_name), then one run per ablation
    (params.ablations), all with the same corpus, masking weights and teacher; every saved model gets its model
    card (lib.models). Returns a DistillStage."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # joins torchrun's process group (gloo on CPU)
    with contextlib.ExitStack() as held:
        held.enter_context(signals_interrupt())  # SIGTERM, SIGHUP: like Ctrl-C, the locks are released
        on_main_or_stop_all(state, lambda: claim_folders(params, state.num_processes, held))
        stage = _run_stage(params, state, progress)
        if stage.undistilled_dir and state.is_main_process:  # its measures are known only now
            models.undistilled_card(stage.undistilled_dir, params,
                                    (stage.heldout_reference or {}).get(params.undistilled_name))
        return stage


def claim_folders(params, world_size, held):
    """Before anything is loaded or written: lock every folder the stage writes (held until ``held`` closes) and
    accept each run's resume (lib.training.accept_resume), so a refused run changes nothing on disk."""
    held.enter_context(hold_locks(preflight.output_folders(params)))
    for run in (params, *(params.variant(name) for name in params.ablations)):
        accept_resume(run, run.path("run_dir") / run.run_name, world_size)


def _run_stage(params, state, progress):
    import transformers
    from transformers import AutoTokenizer, set_seed

    main = state.is_main_process
    results.pin_commit()
    transformers.logging.set_verbosity_error()
    set_seed(params.seed)
    say = print if main else (lambda *args, **kwargs: None)
    say(f"{config.DISTILL}: profile {params.profile}, {state.num_processes} process(es) on {state.device}", flush=True)

    with state.main_process_first():  # rank 0 downloads and tokenizes; the others then read its caches
        tokenizer = hub.from_pretrained(AutoTokenizer, params.teacher, params.mirror)
        teacher, _ = load_teacher(hub.resolve(params.teacher, params.mirror))
        params.check_teacher_depth(teacher.config.num_hidden_layers)
        dataset = data.tokenize_corpus(data.read_corpus(params.corpus, params.mirror), tokenizer, params.max_length,
                                       min_length=params.min_length,
                                       cache_dir=params.path("run_dir") / "corpus" / config.DISTILL)
    say(f"{len(dataset):,} sequences, {sum(dataset['length']):,} tokens", flush=True)
    dataset, heldout = split_heldout(dataset, params)  # before anything trains or counts tokens
    if heldout is not None:
        say(f"{len(heldout):,} sequences held out ({sum(heldout['length']):,} tokens), "
            f"{len(dataset):,} left to train on", flush=True)
    counts = data.token_counts(dataset, teacher.config.vocab_size, progress=progress and main)  # once, for every run

    student = build_student(params, teacher)
    undistilled_dir, reference = None, None
    if params.undistilled_name:  # the same student as initialised, never distilled
        undistilled_dir = params.path("run_dir") / params.undistilled_name
        if main:
            models.save_model(student, undistilled_dir, tokenizer)
            print(f"[rank {state.process_index}] undistilled student saved: {undistilled_dir}", flush=True)
        state.wait_for_everyone()
    if heldout is not None and main:  # what the runs are measured against: the teacher, and no training at all
        evaluate = heldout_evaluator(params, teacher, heldout, tokenizer)
        reference = {config.TEACHER: evaluate(teacher)}
        if params.undistilled_name:
            reference[params.undistilled_name] = evaluate(student)
    state.wait_for_everyone()
    runs = {params.run_name: run_distillation(params, teacher, dataset, tokenizer, counts, progress, student,
                                              heldout, reference)}
    for name in params.ablations:
        say(f"--- ablation {name}: {params.ablations[name]}", flush=True)
        runs[name] = run_distillation(params.variant(name), teacher, dataset, tokenizer, counts, progress,
                                      heldout=heldout)
    for name, summary in runs.items():
        check_ranks_agree(name, summary)
    return DistillStage(teacher, tokenizer, dataset, student, runs, undistilled_dir, heldout, reference)


def main(argv=None):
    from lib.pipeline import stage_main
    code = stage_main(config.DISTILL, argv, __doc__)  # the stage's run function, through lib.config.STAGES
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
