"""Stage 2 (distillation) without papermill, in one process or in every process of a multi-GPU launch.

    python -m lib.distill --profile t4                                          # one process
    torchrun --standalone --nproc_per_node 8 -m lib.distill --profile paper     # 8 GPUs (NCCL) of one machine
    torchrun --standalone --nproc_per_node 2 -m lib.distill --profile smoke -p max_steps=4   # 2 CPU processes (gloo)

It does the work of notebooks/02_distill.py: tokenize the corpus, distil the student (lib.training.run_distillation),
save the undistilled baseline and run the ablations, with the same parameters (params/<profile>/02_distill.yaml,
overridden by ``-p name=value``, YAML values). Every process trains; the main process (rank 0) alone reads and
tokenizes the corpus first (the others then read its cache), writes the log, checkpoints, results files and
models. `accelerate launch --num_processes N -m lib.distill` starts the same processes on GPUs, but not on CPU:
`accelerate launch --cpu --num_processes 2` starts ONE process, so use torchrun there.

The stage's `precision` parameter always decides the autocast dtype: the launcher's mixed-precision setting is
ignored. With `effective_batch_size` set, the sequences per optimizer step stay the same for any process count.
"""
import argparse
import sys

import torch

from lib import config, data, hub, models, training
from lib.pipeline import parse_overrides


def run(params, progress=True):
    """The distillation stage of ``params`` (DistillParams) in this process; returns {run name: summary}."""
    import transformers
    from accelerate import PartialState
    from transformers import AutoTokenizer, set_seed

    from lib.results import pin_commit
    state = PartialState(cpu=not torch.cuda.is_available())  # joins torchrun's process group (gloo on CPU)
    main = state.is_main_process
    pin_commit()
    transformers.logging.set_verbosity_error()
    set_seed(params.seed)
    say = print if main else (lambda *args, **kwargs: None)
    say(f"distill: profile {params.profile}, {state.num_processes} process(es) on {state.device}", flush=True)

    with state.main_process_first():  # rank 0 downloads and tokenizes; the others then read its caches
        tokenizer = hub.from_pretrained(AutoTokenizer, params.teacher, params.mirror)
        teacher, _ = models.load_teacher(hub.resolve(params.teacher, params.mirror))
        params.check_teacher_depth(teacher.config.num_hidden_layers)
        dataset = data.tokenize_corpus(data.read_corpus(params.corpus, params.mirror), tokenizer, params.max_length,
                                       min_length=params.min_length,
                                       cache_dir=params.path("run_dir") / "corpus" / config.DISTILL)
    say(f"{len(dataset):,} sequences", flush=True)
    counts = data.token_counts(dataset, teacher.config.vocab_size, progress=progress and main)

    runs = {params.run_name: training.run_distillation(params, teacher, dataset, tokenizer, counts, progress)}
    if params.undistilled_name:
        if main:
            baseline_dir = params.path("run_dir") / params.undistilled_name
            models.save_model(models.build_student(teacher, layers=params.student_layers,
                                                   n_layers=params.n_student_layers), baseline_dir, tokenizer)
            print(f"[rank {state.process_index}] undistilled student saved: {baseline_dir}", flush=True)
        state.wait_for_everyone()
    for name in params.ablations:
        say(f"--- ablation {name}: {params.ablations[name]}", flush=True)
        runs[name] = training.run_distillation(params.variant(name), teacher, dataset, tokenizer, counts,
                                               progress)
    for name, summary in runs.items():  # every rank: equal digests mean the ranks ended with equal weights
        print(f"[rank {state.process_index}] {name}: steps {summary['steps']}, precision {summary['precision']}, "
              f"world size {summary['world_size']}, weights sha1 {summary['weights_sha1']}", flush=True)
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke", help="parameter set in params/<profile>/ (default smoke)")
    parser.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="override a parameter")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        params = config.load_params(config.DISTILL, profile=args.profile, **parse_overrides(args.param))
    except config.ParameterError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    run(params, progress=not args.no_progress)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
