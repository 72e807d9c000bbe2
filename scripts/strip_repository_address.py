"""Remove the repository address from executed stage notebooks (book/stages/<profile>/*.ipynb).

Stage notebooks executed before the address moved to _config.yml alone carry it in their setup cell's
`git clone` line (and in papermill's copy of the input notebook in the metadata). This rewrites that string
literal, and nothing else, to a pointer at _config.yml: outputs, execution counts and every other cell stay as
they ran. The code the line belongs to only runs on Colab, so the record of what ran is unchanged.

    python scripts/strip_repository_address.py                  # every book/stages/*/*.ipynb, address from _config.yml
    python scripts/strip_repository_address.py --address URL book/stages/cpu/01_teacher.ipynb
"""
import argparse
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import REPO_ROOT  # noqa: E402
from lib.colab import repository_url  # noqa: E402

POINTER = "<repository: url in _config.yml>"


def strip(path, address):
    """Rewrite ``"<address>"`` in the notebook's code cell sources; returns how many literals were replaced."""
    notebook = nbformat.read(path, as_version=4)
    literal, pointer = repr(address).replace("'", '"'), f'"{POINTER}"'
    input_copy = notebook.metadata.get("papermill", {}).get("input_path")
    cells = list(notebook.cells) + (list(input_copy.get("cells", [])) if isinstance(input_copy, dict) else [])
    count = 0
    for cell in cells:
        if cell.get("cell_type") == "code" and literal in cell["source"]:
            count += cell["source"].count(literal)
            cell["source"] = cell["source"].replace(literal, pointer)
    if count:  # nbformat's layout, as papermill wrote it (which ends without a newline when the original does)
        original = Path(path).read_text()
        text = nbformat.writes(notebook)
        Path(path).write_text(text if original.endswith("\n") else text.rstrip("\n"))
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--address", help="the address to remove (default: repository url of _config.yml)")
    args = parser.parse_args(argv)
    address = args.address or repository_url()
    for path in args.notebooks or sorted((REPO_ROOT / "book" / "stages").glob("*/*.ipynb")):
        print(f"{path}: {strip(path, address)} replaced")


if __name__ == "__main__":
    main()
