"""Shared fixtures. The project's tests need nothing outside the repository; tests marked `mirror` use the
offline mirror at ../shared/data/hub (or $DISTILBERT_MIRROR) and skip when it is absent."""
import os
from pathlib import Path

# never wait on the network in tests: huggingface_hub reads these once, at import
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest

from lib import REPO_ROOT

SHARED_HUB = Path(os.environ.get("DISTILBERT_MIRROR") or REPO_ROOT.parent / "shared" / "data" / "hub")


@pytest.fixture
def shared_hub():
    if not SHARED_HUB.is_dir():
        pytest.skip(f"offline mirror not present at {SHARED_HUB}")
    return SHARED_HUB
