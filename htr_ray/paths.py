"""Where the shipped models and the shared data live, found once from the package's own location.

In a checkout (or the container image) ``models/`` sits beside the ``htr_ray`` package and the real
handwriting data in ``../shared/data``; environment variables point elsewhere for installed copies.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = Path(os.environ.get("HTR_MODELS_DIR", REPO_ROOT / "models"))


def shipped_model(name: str, env: str | None = None) -> str:
    """The path of a model shipped in ``models/``; ``env`` names a variable that overrides it."""
    return os.environ.get(env, "") if env and os.environ.get(env) else str(SHIPPED_MODELS / name)


def shared_data() -> Path:
    """The real handwriting data (``../shared/data`` beside the checkout, or ``HTR_SHARED_DATA``)."""
    return Path(os.environ.get("HTR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
