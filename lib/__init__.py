"""lib: the small library behind the DistilBERT reproduction notebooks.

One module per concern: config (stage parameters), hub (hub-or-mirror loading), smoke (the offline
synthetic profile), data, models, losses, training, tasks, metrics, latency, results, plots.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
