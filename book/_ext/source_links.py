"""The ``{source}`` role: link a name in lib/ (or a file) to its lines on the repository.

    {source}`lib.models.build_student`        -> lib/models.py#L120-L158 on the configured branch
    {source}`the loss <lib.losses.distillation_loss>`
    {source}`params/t4/02_distill.yaml`        -> the file

Lines are found by parsing the source (no import), so the links follow the code as it is when the book is
built. A name that does not exist is a build warning (an error under -W): the method page cannot silently
point at code that was renamed or removed.
"""
import ast
from pathlib import Path

from docutils import nodes
from sphinx.util import logging
from sphinx.util.nodes import split_explicit_title

REPO_ROOT = Path(__file__).resolve().parents[2]
FILE_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".ipynb", ".json", ".toml", ".txt", ".cfg"}
logger = logging.getLogger(__name__)


def locate(target, root=REPO_ROOT):
    """(path relative to root, first line, last line) of ``target``: a dotted name under a module
    (``lib.models.build_student``, ``lib.models.AUTHORS_LAYERS``) or a file path (lines None).
    Raises LookupError when it does not exist."""
    root = Path(root)
    if "/" in target or Path(target).suffix in FILE_SUFFIXES:
        if not (root / target).exists():
            raise LookupError(f"no file {target} in the repository")
        return target, None, None
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        module = root.joinpath(*parts[:i]).with_suffix(".py")
        if module.is_file():
            break
    else:
        raise LookupError(f"no module for {target!r} under {root}")
    node = ast.parse(module.read_text())
    for name in parts[i:]:
        node = next((child for child in ast.iter_child_nodes(node) if _defines(child, name)), None)
        if node is None:
            raise LookupError(f"{target!r}: {module.relative_to(root)} defines no {name!r}")
    if isinstance(node, ast.Module):
        return str(module.relative_to(root)), None, None
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return str(module.relative_to(root)), first, node.end_lineno


def _defines(node, name):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    return False


def source_url(repository_url, branch, path, first=None, last=None):
    anchor = f"#L{first}-L{last}" if first else ""
    return f"{repository_url.rstrip('/')}/blob/{branch}/{path}{anchor}"


def source_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    has_title, title, target = split_explicit_title(text)
    literal = nodes.literal(title, title)
    env = inliner.document.settings.env
    try:
        path, first, last = locate(target)
    except LookupError as err:
        logger.warning(f"source link: {err}", location=(env.docname, lineno))
        return [literal], []
    theme = env.config.html_theme_options or {}
    url = source_url(theme.get("repository_url", ""), theme.get("repository_branch", "main"), path, first, last)
    return [nodes.reference(rawtext, "", literal, refuri=url, classes=["source-link"])], []


def setup(app):
    app.add_role("source", source_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
