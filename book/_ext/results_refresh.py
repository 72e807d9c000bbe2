"""Keep report pages in step with results/: re-read (and re-execute) them whenever a results file changed.

Report pages (MyST notebooks in book/ that read results/ through lib/) are executed with ``execute_notebooks: cache``: the
cache is keyed on their code, which does not change when a run writes new results, and Sphinx does not re-read
a page whose source did not change. Without this, an incremental `jupyter-book build` after `make reproduce`
would show the previous numbers (or the previous rendering, after a lib change). A fingerprint of results/ and
lib/ (paths, sizes, modification times) is stored next to
the build; when it differs, the execution cache is dropped and the report and stage pages are re-read.
"""
import hashlib
import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def results_fingerprint(results_dir=None, lib_dir=REPO_ROOT / "lib"):
    """sha1 of (path, size, mtime) of every results file ($DISTILBERT_RESULTS_DIR as lib.report reads it) and of
    the lib sources that turn them into tables and figures: a changed lib.render re-renders the pages too."""
    results_dir = Path(results_dir or os.environ.get("DISTILBERT_RESULTS_DIR") or REPO_ROOT / "results")
    digest = hashlib.sha1()
    for root, pattern in ((Path(results_dir), "*.json"), (Path(lib_dir), "*.py")):
        for path in sorted(root.rglob(pattern)):
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update(str(results_dir).encode())  # another results tree is another build
    return digest.hexdigest()


def is_report_page(path):
    """A MyST notebook (text page with a kernelspec in its front matter) or a stage notebook."""
    path = Path(path)
    if path.suffix == ".ipynb":
        return True
    if path.suffix != ".md" or not path.is_file():
        return False
    head = path.read_text(errors="replace")[:2000]
    return head.startswith("---") and "kernelspec:" in head.split("\n---", 1)[0]


def _stamp(app):
    return Path(app.outdir).parent / ".results-fingerprint"


def on_builder_inited(app):
    current = results_fingerprint()
    stamp = _stamp(app)
    app.results_changed = not stamp.is_file() or stamp.read_text() != current
    if app.results_changed:
        cache = app.config.nb_execution_cache_path or Path(app.outdir).parent / ".jupyter_cache"
        shutil.rmtree(cache, ignore_errors=True)


def on_env_get_outdated(app, env, added, changed, removed):
    if not getattr(app, "results_changed", False):
        return []
    return [doc for doc in env.found_docs if doc not in added and is_report_page(env.doc2path(doc))]


def on_build_finished(app, exception):
    if exception is None:
        _stamp(app).write_text(results_fingerprint())


def setup(app):
    app.connect("builder-inited", on_builder_inited)
    app.connect("env-get-outdated", on_env_get_outdated)
    app.connect("build-finished", on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
