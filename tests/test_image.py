"""Image recipe pieces that need no build: recipe validation, module order, vmlinux, apt mirror."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
import zstandard

from orchestrator.errors import ConfigError, ImageError
from orchestrator.image import apt
from orchestrator.image import build as image

DEP = """kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko
"""


def test_module_chains_put_dependencies_first_share_nothing_and_skip_builtins() -> None:
    chains = image.module_chains(DEP, {"virtio_pci"}, ["virtio_blk", "virtio-net", "virtio_pci", "ext4"])
    names = [[p.rsplit("/", 1)[1] for p in c] for c in chains]
    # virtio_blk and virtio_net share virtio_ring: one chain; ext4 needs none of theirs: its own
    assert names == [["virtio_ring.ko", "virtio_blk.ko", "failover.ko", "net_failover.ko", "virtio_net.ko"],
                     ["crc16.ko", "mbcache.ko", "jbd2.ko", "ext4.ko"]]
    assert image.module_chains(DEP, set(), ["ext4", "mbcache"]) == [
        ["kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko"]]
    with pytest.raises(ImageError, match="'nosuch' is neither in modules.dep nor built in"):
        image.module_chains(DEP, set(), ["nosuch"])


def test_vmlinux_is_the_xz_or_zstd_payload() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 10
    bz = b"MZ setup code" + b"\0" * 100 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert image.extract_vmlinux(bz) == elf
    bz = b"MZ setup code" + b"\0" * 100 + zstandard.ZstdCompressor().compress(elf)  # trixie's kernels
    assert image.extract_vmlinux(bz) == elf
    with pytest.raises(ImageError, match="no XZ or zstd payload"):
        image.extract_vmlinux(b"MZ gzip kernel")


def test_recipe_loads_and_hash_is_stable() -> None:
    r = image.Recipe.load("bookworm")
    assert "linux-image-amd64" in r.packages and "nvme" in r.early_modules
    assert r.digest() == image.Recipe.load("bookworm").digest() and len(r.digest()) == 16


def test_unknown_recipe_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="image 'nope'.*known images: bookworm"):
        image.Recipe.load("nope")


def test_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://example.invalid/other cloud-sdk-bookworm main\n"
                                           "# deb http://commented.invalid/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    os_release = tmp_path / "os-release"
    os_release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    assert apt.host_mirror("bookworm", tmp_path, os_release) == "http://mirror.invalid/debian"
    # a release the host does not use: the mirror of the host's own release serves it too
    assert apt.host_mirror("trixie", tmp_path, os_release) == "http://mirror.invalid/debian"
    with pytest.raises(ConfigError, match="no apt source serves suite 'trixie' \\(or the host's own \\?\\).*--mirror"):
        apt.host_mirror("trixie", tmp_path, tmp_path / "no-os-release")
    (tmp_path / "sources.list").write_text("deb http://one.invalid/debian trixie main\n")
    assert apt.host_mirror("trixie", tmp_path, os_release) == "http://one.invalid/debian"


def recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **files: str) -> None:
    for name, text in files.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.toml").write_text(text)
    monkeypatch.setattr(image, "IMAGES", tmp_path)


BASE = """name = "base"\nsuite = "bookworm"\nhostname = "h"\ndisk_size_mib = 1024\npackages = ["a", "b"]
path_excludes = []\npath_includes = []\nprune_modules = []\ninitrd_modules = []\nearly_modules = []
cmdline = "console=ttyS0"\n"""


def test_a_variant_inherits_its_base_and_adds_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipes(tmp_path, monkeypatch, base=BASE,
            spdk='base = "base"\nname = "spdk"\ndisk_size_mib = 4096\nextra_packages = ["c"]\n')
    r = image.Recipe.load("spdk")
    assert (r.name, r.suite, r.disk_size_mib, r.packages) == ("spdk", "bookworm", 4096, ["a", "b", "c"])
    before = r.digest()
    (tmp_path / "base/recipe.toml").write_text(BASE.replace('["a", "b"]', '["a"]'))
    assert image.Recipe.load("spdk").digest() != before  # the base is part of the variant's hash


def test_recipe_errors_name_the_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipes(tmp_path, monkeypatch, base=BASE, loop='base = "loop"\nname = "loop"\n',
            orphan='name = "orphan"\nextra_packages = ["x"]\n', bad='base = "nosuch"\n')
    with pytest.raises(ConfigError, match=r"loop/recipe.toml: field 'base': recipes inherit in a circle"):
        image.Recipe.load("loop")
    with pytest.raises(ConfigError, match=r"orphan/recipe.toml: field 'extra_packages' needs a 'base'"):
        image.Recipe.load("orphan")
    with pytest.raises(ConfigError, match=r"bad/recipe.toml: field 'base': image 'nosuch': no .*; known images: "):
        image.Recipe.load("bad")


def test_the_spdk_image_is_the_default_only_with_a_tree() -> None:
    assert image.choose(None, None, spdk=False) == image.DEFAULT_IMAGE
    assert image.choose(None, None, spdk=True) == image.SPDK_IMAGE == "bookworm-spdk"
    assert image.choose(None, "bookworm", spdk=True) == "bookworm"  # the topology's choice stands
    assert image.choose("bookworm-spdk", "bookworm", spdk=False) == "bookworm-spdk"  # --image wins
    spdk = image.Recipe.load(image.SPDK_IMAGE)
    assert {"libfuse3-3", "openssl", "ibverbs-providers", "gcc", "meson"} <= set(spdk.packages)
    assert set(image.Recipe.load(image.DEFAULT_IMAGE).packages) < set(spdk.packages)
