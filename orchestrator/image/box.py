"""A guest image as a vagrant-libvirt box (`tbctl image box`): its root disk as box.img with the
box's metadata, cached beside the image and named by its digest, so a box is made once per image."""

from __future__ import annotations

import io
import json
import math
import subprocess
import tarfile
from pathlib import Path

from orchestrator.errors import ImageError
from orchestrator.image.build import Image
from orchestrator.paths import cache_dir
from orchestrator.render import render


def name(img: Image) -> str:
    """The box's name in Vagrant: one per image build."""
    return f"tbctl/{img.manifest['name']}-{img.digest}"


def path(img: Image) -> Path:
    return cache_dir() / "boxes" / f"{img.manifest['name']}-{img.digest}.box"


def _virtual_size_gib(disk: Path) -> int:
    try:
        out = subprocess.run(["qemu-img", "info", "--output=json", str(disk)], check=True, capture_output=True,
                             timeout=30, text=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        raise ImageError(f"qemu-img info {disk}: {e}") from None
    return max(1, math.ceil(int(json.loads(out)["virtual-size"]) / (1 << 30)))


def ensure(img: Image) -> Path:
    """The image's box, made first if missing: an uncompressed tar (the disk is already qcow2)."""
    box = path(img)
    if box.is_file():
        return box
    box.parent.mkdir(parents=True, exist_ok=True)
    meta = {"provider": "libvirt", "format": "qcow2", "virtual_size": _virtual_size_gib(img.disk)}
    vagrantfile = render("vagrant/box-Vagrantfile.j2", name=img.manifest["name"], digest=img.digest,
                         kernel=img.manifest["kernel"])
    part = box.with_suffix(".part")
    with tarfile.open(part, "w") as tar:
        for member, text in (("metadata.json", json.dumps(meta) + "\n"), ("Vagrantfile", vagrantfile)):
            info = tarfile.TarInfo(member)
            info.size = len(data := text.encode())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        tar.add(img.disk, arcname="box.img")
    part.replace(box)
    return box
