"""What the MLM-head adaptation does to the teacher as a model to fine-tune: stage 1's adaptation with different
numbers of top layers trained, each teacher then fine-tuned on probe tasks and scored on train-split rows held out
of training (the budget rule's rows), beside the un-adapted encoder. Why params/cpu/01_teacher.yaml stops at the
top 2 layers.

    python benchmarks/adaptation_probe.py                          # cpu profile: top 0, 2, 6; RTE 1000, MRPC 1500
    python benchmarks/adaptation_probe.py --layers 2 6 --probes rte:1000 mrpc:1500 cola:2000

Each adaptation is stage 1 itself (lib.teacher.run with params/cpu/01_teacher.yaml, adapt_top_layers set, no
intermediate evaluations) in a folder of its own; each probe is stage 3's fine-tuning (lib.finetune, params/cpu/
03_glue.yaml with the task's budget set to the rung, seed 1). Printed: each teacher's held-out masked-token accuracy
and, per probe, its held-out and dev scores beside the held-out constant-answer floor. One seed per cell: differences
of a few points are within seed noise. Figures only: nothing here asserts.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import budget_rule, config, finetune, teacher  # noqa: E402


def adapted_teacher(top_layers, folder, profile):
    """Stage 1 with ``top_layers`` trained: (saved folder, held-out masked-token accuracy)."""
    params = config.load_params(config.TEACHER, profile=profile, adapt_top_layers=top_layers, adapt_eval_every=0,
                                run_dir=str(folder), results_dir=str(folder / "results"))
    prepared = teacher.run(params, progress=False)
    return str(prepared.saved_to), prepared.mlm_after["mlm_accuracy"]


def probe(model_path, task, rung, folder, profile):
    params = config.load_params(config.GLUE, profile=profile, run_dir=str(folder), results_dir=str(folder / "results"))
    result = finetune.finetune_classification(model_path, task, 1, budget_rule.with_budget(params, task, rung),
                                              folder / f"{task}-{rung}")
    held = result["metrics_by_split"][budget_rule.HELDOUT]["score"]
    return {"heldout": held, "floor": result["predictions"][budget_rule.HELDOUT]["floor"], "dev": result["score"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 2, 6], help="top layers trained with the head")
    parser.add_argument("--probes", nargs="+", default=["rte:1000", "mrpc:1500"], help="task:training examples")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    probes = [(task, int(rung)) for task, rung in (p.split(":") for p in args.probes)]
    base = config.load_params(config.TEACHER, profile=args.profile).teacher
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teachers = [("not adapted", base, None)]
        for layers in args.layers:
            path, accuracy = adapted_teacher(layers, Path(tmp) / f"top{layers}", args.profile)
            teachers.append((f"top {layers} layers", path, accuracy))
        for name, path, accuracy in teachers:
            row = {"teacher": name, "mlm_accuracy": accuracy}
            for task, rung in probes:
                row[f"{task}-{rung}"] = probe(path, task, rung, Path(tmp) / "probe" / name.replace(" ", "-"),
                                              args.profile)
            rows.append(row)
            cells = "  ".join(f"{k}: held-out {v['heldout']:.1f} (floor {v['floor']:.1f}), dev {v['dev']:.1f}"
                              for k, v in row.items() if isinstance(v, dict))
            mlm = "-" if accuracy is None else f"{100 * accuracy:.1f} %"
            print(f"{name:>16}  masked-token accuracy {mlm:>7}  {cells}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
