"""`tbctl spdk check` on small trees and guest roots made with the real compiler and linker.

Each ELF here is gcc's output, so what the check reads (DT_NEEDED, RUNPATH, symbol version
needs and definitions) is what a real SPDK build has; the guest root holds the host's own libc.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.spdk.tree import GuestRoot, Tree, check, read_elf

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
CPU = frozenset({"sse", "sse2", "pni", "ssse3", "sse4.1", "sse4.2"})  # TCG's max, as QEMU names them

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or not LIBC.is_file(), reason="needs gcc and glibc")


def cc(out: Path, source: str, *args: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f".{out.name}.c"
    src.write_text(source)
    res = subprocess.run(["gcc", "-o", str(out), str(src), *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    src.unlink()
    return out


def guest_root(tmp: Path, with_dep: bool = True) -> GuestRoot:
    """A guest image root: its libc behind an absolute symlink (as Debian's usrmerge has), a
    library found through /etc/ld.so.conf.d, and (optionally) the library the tree's one needs."""
    root = tmp / "guest"
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    shutil.copy(LIBC, libdir / "libc-2.real.so")
    (libdir / "libc.so.6").symlink_to("/usr/lib/x86_64-linux-gnu/libc-2.real.so")
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/extra.conf").write_text("/opt/extra/lib\n")
    if with_dep:
        cc(root / "opt/extra/lib/libguestdep.so.1", "int guestdep(void) { return 1; }\n",
           "-shared", "-fPIC", "-Wl,-soname,libguestdep.so.1")
    return GuestRoot(root, "testimg")


def tree(tmp: Path, shared: bool = True) -> Tree:
    """A tree built like SPDK's --with-shared: build/examples/hotplug links build/lib's library
    with a RUNPATH naming the build host's directory; that library needs one from the guest."""
    t = tmp / "spdk"
    lib = t / "build/lib"
    dep = tmp / "guest/opt/extra/lib"
    if not (dep / "libguestdep.so.1").exists():  # link against a copy; the guest may lack it
        cc(tmp / "linkonly/libguestdep.so.1", "int guestdep(void) { return 1; }\n", "-shared", "-fPIC",
           "-Wl,-soname,libguestdep.so.1")
        dep = tmp / "linkonly"
    (dep / "libguestdep.so").unlink(missing_ok=True)
    (dep / "libguestdep.so").symlink_to("libguestdep.so.1")
    cc(lib / "libspdk_env.so.1", "int guestdep(void);\nint env_init(void) { return guestdep(); }\n",
       "-shared", "-fPIC", "-Wl,-soname,libspdk_env.so.1", f"-L{dep}", "-lguestdep")
    (lib / "libspdk_env.so").symlink_to("libspdk_env.so.1")
    main = "int env_init(void);\nint main(void) { return env_init(); }\n" if shared else "int main(void) { return 0; }\n"
    link = [f"-L{lib}", f"-Wl,-rpath,{lib}", "-lspdk_env"] if shared else []
    cc(t / "build/examples/hotplug", main, *link, f"-Wl,-rpath-link,{dep}")
    return Tree(t)


def test_a_tree_whose_libraries_the_guest_has_passes(tmp_path: Path) -> None:
    g = guest_root(tmp_path)
    t = tree(tmp_path)
    assert t.apps == ["build/examples/hotplug"]
    assert t.lib_dirs() == [t.root / "build/lib"]
    assert t.guest_lib_path("/mnt/spdk") == "/mnt/spdk/build/lib"
    assert check(t, g, CPU, "qemu max", []) == []


def test_a_static_build_needs_no_library_path(tmp_path: Path) -> None:
    guest_root(tmp_path)
    t = tree(tmp_path, shared=False)
    assert t.lib_dirs() == [] and t.guest_lib_path("/mnt/spdk") == ""


def test_a_library_missing_in_the_guest_is_one_line_naming_the_file(tmp_path: Path) -> None:
    g = guest_root(tmp_path, with_dep=False)
    t = tree(tmp_path)
    other = guest_root(tmp_path / "other")
    problems = check(t, g, CPU, "qemu max", [GuestRoot(other.root, "fuller")])
    assert [p.line() for p in problems] == [
        "build/lib/libspdk_env.so.1: needs libguestdep.so.1; the guest image testimg has no libguestdep.so.1; "
        "use --image fuller, which has it"]


def test_a_library_missing_from_the_tree_names_the_outside_runpath(tmp_path: Path) -> None:
    g = guest_root(tmp_path)
    t = tree(tmp_path)
    moved = tmp_path / "elsewhere"
    shutil.move(t.root / "build/lib", moved)  # as if built against a library installed outside the tree
    problems = check(Tree(t.root), g, CPU, "qemu max", [])
    assert len(problems) == 1 and problems[0].file == "build/examples/hotplug"
    assert problems[0].need == "libspdk_env.so.1"
    assert f"its RUNPATH {t.root / 'build/lib'}" in problems[0].have


def test_a_tree_built_against_a_newer_glibc_is_refused(tmp_path: Path) -> None:
    """The linker records GLIBC_2.99 when the app was linked against a libc that has it: here a
    stub libc.so.6 with that version stands in for a newer distribution's glibc."""
    g = guest_root(tmp_path)
    stub = tmp_path / "newer-libc"
    (stub / "v.map").parent.mkdir()
    (stub / "v.map").write_text("GLIBC_2.99 { global: tbctl_new_call; };\n")
    cc(stub / "libc.so.6", "int tbctl_new_call(void) { return 0; }\n", "-shared", "-fPIC", "-nostdlib",
       "-Wl,-soname,libc.so.6", f"-Wl,--version-script={stub / 'v.map'}")
    t = tmp_path / "spdk"
    cc(t / "build/examples/hotplug", "int tbctl_new_call(void);\nint main(void) { return tbctl_new_call(); }\n",
       "-nostdlib", "-nostartfiles", "-Wl,-emain", f"-L{stub}", "-l:libc.so.6")
    assert read_elf(t / "build/examples/hotplug").version_needs["libc.so.6"] == {"GLIBC_2.99"}  # type: ignore[union-attr]
    (problem,) = check(Tree(t), g, CPU, "qemu max", [])
    assert problem.need == "GLIBC_2.99 from libc.so.6"
    assert problem.have.startswith("the guest's libc.so.6 has up to GLIBC_2.")
    assert "tbctl image shell --image testimg" in problem.fix


def test_cpu_features_the_guest_lacks_are_named(tmp_path: Path) -> None:
    g = guest_root(tmp_path)
    t = tree(tmp_path)
    inc = t.root / "dpdk/build/include"
    inc.mkdir(parents=True)
    (inc / "rte_build_config.h").write_text(
        "#define RTE_COMPILE_TIME_CPUFLAGS RTE_CPUFLAG_SSE,RTE_CPUFLAG_SSE3,RTE_CPUFLAG_SSE4_2,"
        "RTE_CPUFLAG_AVX2,RTE_CPUFLAG_AVX512F\n#define RTE_MACHINE native\n"
        "#define RTE_VER_YEAR 26\n#define RTE_VER_MONTH 3\n#define RTE_VER_MINOR 0\n")
    (problem,) = check(Tree(t.root), g, CPU | {"avx2"}, "QEMU -cpu max under tcg", [])
    assert problem.file == "dpdk/build/include/rte_build_config.h"
    assert problem.need == "CPU features AVX512F (compiled for machine 'native')"
    assert "--target-arch=x86-64-v2" in problem.fix
    assert check(Tree(t.root), g, CPU | {"avx2", "avx512f"}, "kvm host", []) == []


def test_a_system_dpdk_of_another_version_is_refused(tmp_path: Path) -> None:
    g = guest_root(tmp_path)
    cc(g.root / "usr/lib/x86_64-linux-gnu/librte_eal.so.23",
       'const char *rte_version(void) { return "DPDK 22.11.11"; }\n', "-shared", "-fPIC",
       "-Wl,-soname,librte_eal.so.23")
    t = tmp_path / "spdk"
    cc(t / "build/examples/hotplug", "const char *rte_version(void);\nint main(void) { return !rte_version(); }\n",
       f"-L{g.root / 'usr/lib/x86_64-linux-gnu'}", "-l:librte_eal.so.23")
    inc = tmp_path / "dpdk-install/include"
    inc.mkdir(parents=True)
    (inc / "rte_build_config.h").write_text("#define RTE_VER_YEAR 26\n#define RTE_VER_MONTH 3\n#define RTE_VER_MINOR 0\n")
    (t / "mk").mkdir()
    (t / "mk/config.mk").write_text(f"CONFIG_DPDK_DIR?={tmp_path / 'dpdk-install'}\n")
    (problem,) = check(Tree(t), g, CPU, "qemu max", [])
    assert problem.need.startswith("DPDK 26.3.0") and problem.have == "the guest's librte_eal.so.23 is DPDK 22.11.11"


def test_a_tree_with_no_app_says_build_it_first(tmp_path: Path) -> None:
    (problem,) = check(Tree(tmp_path), guest_root(tmp_path), CPU, "qemu max", [])
    assert problem.have == "none is in the tree" and "make" in problem.fix
