"""One-off migration of committed results files: absolute paths into a checkout made relative to it.

Results written before lib.results.repo_relative stored the model, log and checkpoint paths of stages 1 and 2 as
absolute paths of the machine that ran them (e.g. /work/main/runs/cpu/student). This rewrites each such string
to the part from its run_dir on (runs/cpu/student), and changes nothing else: every other value, the key order and
the formatting (lib.results.write_json) stay as they are, and the script checks that the numbers are unchanged.

    python scripts/migrate_results.py            # rewrites results/**/*.json in place, prints what changed
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lib import results  # noqa: E402
from lib.results import write_json  # noqa: E402

# an absolute path with a runs/<profile>/ part: the checkout it was written in is everything before "runs/"
CHECKOUT_PATH = re.compile(r"^/(?!content/).*?/(runs/[^/]+(?:/.*)?)$")


def relative(value):
    if isinstance(value, dict):
        return {k: relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v) for v in value]
    if isinstance(value, str) and (match := CHECKOUT_PATH.match(value)):
        return match.group(1)
    return value


def numbers(value):
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [] if isinstance(value, str) else [repr(value)]


def main():
    for path in results.results_files(ROOT / "results"):
        before = json.loads(path.read_text())
        after = relative(before)
        if after != before:
            assert numbers(after) == numbers(before), path
            write_json(path, after)
            print(f"{path.relative_to(ROOT)}: paths made relative to the repository")


if __name__ == "__main__":
    main()
