"""Fine-tuning settings probed on the budget rule's held-out rows: one model fine-tuned on one task at one rung with
a given learning rate and number of epochs, per seed; printed: its held-out score beside the held-out rows'
constant-answer floor, and its dev score. Why params/cpu/03_glue.yaml fine-tunes STS-B and RTE at 5e-5.

    python benchmarks/finetune_probe.py runs/cpu/teacher stsb:2000:1e-4:3 stsb:2000:5e-5:3 --seeds 1 2 3
    python benchmarks/finetune_probe.py runs/cpu/teacher rte:1990:5e-5:3 rte:1990:5e-5:6 --seeds 1 2

Each probe is stage 3's fine-tuning (lib.finetune, the profile's 03_glue.yaml with the task's budget, learning rate
and epochs set). One row per seed: RTE's 500 held-out rows give a standard error of about 2.2 points. Figures only:
nothing here asserts.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import budget_rule, config, finetune  # noqa: E402


def probe(model_path, task, rung, learning_rate, n_epoch, seed, folder, profile):
    params = config.load_params(config.GLUE, profile=profile, run_dir=str(folder), results_dir=str(folder / "results"))
    params = budget_rule.with_task_settings(params, task, max_train_samples=rung, learning_rate=learning_rate,
                                            n_epoch=n_epoch)
    result = finetune.finetune_classification(model_path, task, seed, params, folder / f"{task}-{rung}-seed{seed}")
    return (result["metrics_by_split"][budget_rule.HELDOUT]["score"],
            result["predictions"][budget_rule.HELDOUT]["floor"], result["score"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the model folder to fine-tune (e.g. runs/cpu/teacher after stage 1)")
    parser.add_argument("probes", nargs="+", help="task:training examples:learning rate:epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.probes:
            task, rung, learning_rate, n_epoch = spec.split(":")
            for seed in args.seeds:
                heldout, floor, dev = probe(args.model, task, int(rung), float(learning_rate), int(n_epoch), seed,
                                            Path(tmp), args.profile)
                print(f"{spec:>20}  seed {seed}  held-out {heldout:5.1f} (floor {floor:.1f})  dev {dev:5.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
