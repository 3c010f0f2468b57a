"""Where tbctl keeps things: the source tree's data and the per-user cache and state."""

from __future__ import annotations

import os
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = SOURCE_ROOT / "templates"
IMAGES = SOURCE_ROOT / "images"


def recipe_names() -> list[str]:
    """The guest image recipes in this source tree (images/<name>/recipe.toml)."""
    return sorted(p.parent.name for p in IMAGES.glob("*/recipe.toml"))


def cache_dir() -> Path:
    """Built guest images and host probes: safe to delete, expensive to rebuild."""
    return Path(os.environ.get("TBCTL_CACHE") or Path.home() / ".cache" / "tbctl")


def state_dir() -> Path:
    """The live-VM registry: one private run directory per QEMU, with its sockets and overlay.

    Kept short because unix socket paths are limited to 107 bytes.
    """
    if os.environ.get("TBCTL_STATE"):
        return Path(os.environ["TBCTL_STATE"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "tbctl" if runtime else Path(f"/tmp/tbctl-{os.getuid()}")


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make sure it is ours alone: a directory planted in /tmp
    by someone else, or a symlink, is refused rather than used."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.lstat()
    if path.is_symlink() or st.st_uid != os.getuid():
        raise PermissionError(f"{path}: not a directory owned by uid {os.getuid()}; refusing to use it")
    os.chmod(path, 0o700)
    return path
