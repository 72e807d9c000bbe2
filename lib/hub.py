"""Hub-or-mirror loading.

Every model, dataset and metric module is named by its hub id (``google-bert/bert-base-uncased``, ``nyu-mll/glue``,
``evaluate-metric/glue``).
When a mirror directory is configured (the ``mirror`` stage parameter, else the ``DISTILBERT_MIRROR``
environment variable) and holds ``<mirror>/<id>``, that local copy is loaded instead; otherwise the id goes
to the hub. Ids under ``smoke/`` name the synthetic offline profile, generated on first use (lib.smoke).
"""
import os
from pathlib import Path

from lib import REPO_ROOT, repo_path

MIRROR_ENV = "DISTILBERT_MIRROR"
SMOKE_PREFIX = "smoke/"
SMOKE_HUB = REPO_ROOT / "build" / "smoke-hub"


class HubUnavailableError(OSError):
    """Neither the mirror nor the hub could provide an id."""


class ConfigNotFoundError(ValueError):
    """A dataset was found but lacks the requested config (e.g. a GLUE task absent from the mirror)."""


def mirror_dir(mirror=None):
    """The configured mirror directory (parameter first, then environment), or None."""
    source = "parameter 'mirror'" if mirror else f"environment variable {MIRROR_ENV}"
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if not mirror:
        return None
    path = repo_path(mirror)
    if not path.is_dir():
        raise FileNotFoundError(f"{source} = {mirror!r}: no such directory ({path})")
    return path


def resolve(repo_id, mirror=None):
    """Where ``repo_id`` will be loaded from: a local path (str) or the hub id itself."""
    if repo_id.startswith(SMOKE_PREFIX):
        from lib import smoke
        smoke.ensure_hub(SMOKE_HUB, repo_id)  # with the stand-ins of registered tasks (lib.tasks) under repo_id
        return str(SMOKE_HUB / repo_id)
    for local in (Path(repo_id).expanduser(), REPO_ROOT / repo_id):  # a local model or data directory
        if local.exists():
            return str(local)
    root = mirror_dir(mirror)
    if root is not None and (root / repo_id).exists():
        return str(root / repo_id)
    return repo_id


def _unavailable(repo_id, mirror, err):
    root = mirror_dir(mirror)
    tried = [f"mirror: {root / repo_id} (missing)" if root else f"mirror: none configured ({MIRROR_ENV} unset)",
             f"hub: {repo_id} ({type(err).__name__}: {str(err).splitlines()[0][:160]})"]
    return HubUnavailableError(
        f"cannot load {repo_id!r}. Tried\n  - " + "\n  - ".join(tried) + "\n"
        f"Provide a mirror: a directory laid out like the hub (<mirror>/{repo_id}/...) passed as the "
        f"'mirror' parameter or the {MIRROR_ENV} environment variable, or give a local path instead of the id.")


def from_pretrained(cls, repo_id, mirror=None, **kwargs):
    """``cls.from_pretrained`` on the resolved location, e.g. ``from_pretrained(AutoTokenizer, id)``."""
    path = resolve(repo_id, mirror)
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as err:
        if path != repo_id:  # a local copy that fails to load is a real error, not a reachability one
            raise
        raise _unavailable(repo_id, mirror, err) from err


def load_dataset(repo_id, name=None, mirror=None, **kwargs):
    """``datasets.load_dataset`` on the resolved location (same arguments)."""
    import datasets
    path = resolve(repo_id, mirror)
    if repo_id.startswith(SMOKE_PREFIX):  # cache inside the generated hub, keyed by its files as a mirror's is
        kwargs.setdefault("cache_dir", str(SMOKE_HUB / ".cache" / _local_cache_dir(Path(path)).name))
    elif Path(path).is_dir():
        kwargs.setdefault("cache_dir", str(_local_cache_dir(Path(path))))
    try:
        return datasets.load_dataset(path, name, **kwargs)
    except (OSError, datasets.exceptions.DatasetNotFoundError) as err:
        if path != repo_id:
            raise
        raise _unavailable(repo_id, mirror, err) from err
    except ValueError as err:
        if name is None or "BuilderConfig" not in str(err):  # datasets' wording for an unknown config
            raise
        raise _missing_config(repo_id, name, path, mirror) from None


def load_metric(repo_id, config=None, mirror=None):
    """``evaluate.load`` of a metric module (``evaluate-metric/glue``, config ``mrpc``) on the resolved location:
    the mirror's copy, else the hub. HubUnavailableError when neither has it (offline with no mirror copy)."""
    import evaluate
    path = resolve(repo_id, mirror)
    try:
        return evaluate.load(path, config, keep_in_memory=True)  # in memory: no cache files per computation
    except OSError as err:  # evaluate's FileNotFoundError offline, a ConnectionError without network
        if path != repo_id:
            raise
        raise _unavailable(repo_id, mirror, err) from err


def _local_cache_dir(directory):
    """A datasets cache for a local dataset directory that changes whenever its files do. datasets keys a local
    directory's cache by its name, config and README only: rewritten data files under the same path would be
    served from the old cache (stale rows, and results keyed on them)."""
    import hashlib

    import datasets
    stamp = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file() and ".cache" not in p.parts):
        info = file.stat()
        stamp.update(f"{file.relative_to(directory)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return Path(datasets.config.HF_DATASETS_CACHE) / "local" / stamp.hexdigest()[:16]


def _missing_config(repo_id, name, path, mirror):
    import datasets
    try:
        configs = ", ".join(datasets.get_dataset_config_names(path))
    except Exception as err:  # the listing is a courtesy; the error must still say what was tried
        configs = f"unknown ({type(err).__name__})"
    if Path(path).exists():  # a mirror copy or a local directory
        where = f"at {path}"
    else:
        where = f"on the hub (no mirror copy of it: {_mirror_text(repo_id, mirror)})"
    return ConfigNotFoundError(
        f"dataset {repo_id!r} has no config {name!r}: tried the copy {where}, whose configs are: {configs}. "
        f"Add {name!r} to that copy, or do not ask for it.")


def _mirror_text(repo_id, mirror):
    root = mirror_dir(mirror)
    return f"{root / repo_id} is missing" if root else f"no mirror configured, {MIRROR_ENV} unset"


# --- what a saved model folder holds (one list each: models, finetune, preflight and latency read these) ---

# as save_pretrained / torch.save name them; a sharded checkpoint's index names its shards
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.pth", "*.index.json")
# a model folder's tokenizer: one vocabulary file at least, and the files that shape how it reads text
TOKENIZER_VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                          "tokenizer.model")
TOKENIZER_FILES = (*TOKENIZER_VOCABULARIES, "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def weight_files(model_dir):
    """The weight files of a saved model directory (shards included), sorted; [] when it holds only a config and a
    tokenizer."""
    return sorted({f for pattern in WEIGHT_FILES for f in Path(model_dir).glob(pattern)})


def has_tokenizer_vocabulary(model_dir):
    """Whether a model directory holds one of TOKENIZER_VOCABULARIES."""
    return any((Path(model_dir) / name).is_file() for name in TOKENIZER_VOCABULARIES)
