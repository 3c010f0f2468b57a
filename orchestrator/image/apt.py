"""The Debian mirror to build from, read from the host's own apt sources (no host names in the repo)."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.errors import ConfigError

SOURCES = Path("/etc/apt")


def _entries(root: Path) -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) for every 'deb' source in one-line and deb822 files."""
    entries: list[tuple[str, list[str], list[str]]] = []
    files = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for f in files:
        if not f.is_file():
            continue
        for text in f.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", "", text.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]], words[3:]))
    for f in sorted((root / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    entries.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return entries


def host_mirror(suite: str, root: Path = SOURCES, os_release: Path = Path("/etc/os-release")) -> str:
    """The host's mirror that serves `suite` with component main (not -updates or -security);
    for a suite the host does not use (a trixie guest on a bookworm host), the mirror of the
    host's own release: a Debian mirror serves every release."""
    entries = _entries(root)
    for uri, suites, components in entries:
        if suite in suites and "main" in components:
            return uri
    codename = host_codename(os_release)
    for uri, suites, components in entries:
        if codename and codename in suites and "main" in components:
            return uri
    raise ConfigError(f"{root}: no apt source serves suite {suite!r} (or the host's own {codename or '?'}) "
                      f"with component 'main'; pass --mirror URL")


def host_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    """The host's Debian release (bookworm, trixie), from os-release."""
    try:
        text = os_release.read_text()
    except OSError:
        return None
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    return m.group(1) if m else None
