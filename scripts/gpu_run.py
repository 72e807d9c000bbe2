"""`make gpu-run`: the GPU check, then the gpu profile, on one lent GPU, with each step's elapsed time.

    make gpu-run                       # results/gpu-check/<gpu>.json, then results/gpu/ (about 10 minutes on an H200)
    make gpu-run ARGS="--cpu --out D"  # CPU dry run of the same two steps on tiny shapes, everything under D

The dry run runs the same commands with `scripts/gpu_check.py --cpu` and the gpu profile's stages on the smoke
profile's tiny synthetic world (no mirror), into D; tests/test_gpu_run.py runs it. A failed step stops the run.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = "teacher,distill,glue,imdb_squad,latency"  # the gpu profile runs every stage


def steps(cpu, out):
    """[(name, argv)]: the GPU check, then the pipeline."""
    check = [sys.executable, "scripts/gpu_check.py"]
    pipeline = [sys.executable, "-m", "lib.pipeline", "--stages", STAGES]
    if not cpu:
        return [("gpu-check", check), ("gpu profile", pipeline + ["--profile", "gpu"])]
    return [("gpu-check --cpu", check + ["--cpu", "--out", str(out / "gpu-check" / "cpu-dry-run.json")]),
            ("smoke-sized gpu profile", pipeline + ["--profile", "smoke", "--output-dir", str(out / "notebooks"),
                                                    "-p", f"run_dir={out / 'runs'}", "-p", f"results_dir={out / 'gpu'}",
                                                    "-p", "tasks=[sst2,stsb]"])]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="dry run on CPU with tiny shapes (no GPU needed)")
    parser.add_argument("--out", help="--cpu: folder of both results (default: a new temp folder)")
    args = parser.parse_args(argv)
    if not args.cpu:
        import torch
        if not torch.cuda.is_available():
            print("gpu-run: no CUDA GPU here; nothing run. `make gpu-run ARGS=--cpu` is the CPU dry run.", file=sys.stderr)
            return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-run-")).resolve() if args.cpu else None
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    times, start = [], time.perf_counter()
    for name, argv_ in steps(args.cpu, out):
        print(f"\n### gpu-run: {name}: {' '.join(argv_[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(argv_, cwd=ROOT, env=env).returncode
        times.append((name, time.perf_counter() - t))
        print(f"### gpu-run: {name} {'done' if rc == 0 else f'FAILED (exit {rc})'} in {times[-1][1]:.0f} s", flush=True)
        if rc:
            return rc
    print("\n### gpu-run: " + ", ".join(f"{n} {s:.0f} s" for n, s in times)
          + f"; total {time.perf_counter() - start:.0f} s -> "
          + (f"{out}" if args.cpu else "results/gpu-check/, results/gpu/ (commit both)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
