"""tbctl image: build, list, a shell in an image's userland, and the image as a Vagrant box."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from orchestrator import image
from orchestrator.cli.argtypes import SECONDS, mirror_url
from orchestrator.cli.common import MIRROR_HELP
from orchestrator.errors import ConfigError
from orchestrator.image import box, shell


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("image", help="build or list guest images")
    isub = sp.add_subparsers(dest="image_cmd", required=True)
    b = isub.add_parser("build", help="build the image of a recipe (a no-op when cached)")
    b.add_argument("recipe", nargs="?", default=image.DEFAULT_IMAGE)
    b.add_argument("--mirror", type=mirror_url, help="Debian mirror URL (default: the host's apt source)")
    isub.add_parser("list", help="list cached images")
    bx = isub.add_parser("box", help="the image as a vagrant-libvirt box (the top-level Vagrantfile's); prints its path")
    bx.add_argument("recipe", nargs="?", default=image.DEFAULT_IMAGE)
    bx.add_argument("--mirror", type=mirror_url, help=MIRROR_HELP)
    sh = isub.add_parser("shell", help="a shell (or -- CMD) in an image's userland on the host, e.g. to build "
                                       "a tree for the guest; image read-only, --bind dirs read-write, no network")
    sh.add_argument("--image", default=image.DEFAULT_IMAGE, help=f"recipe (default {image.DEFAULT_IMAGE})")
    sh.add_argument("--bind", action="append", default=[], metavar="DIR",
                    help="a host directory, read-write at the same path inside (repeatable; the first is the cwd)")
    sh.add_argument("--timeout", type=SECONDS, default=4 * 3600, metavar="S",
                    help="deadline for CMD; killed with all it started (default 4 h; none for a shell)")
    sh.add_argument("--mirror", type=mirror_url, help=MIRROR_HELP)
    sh.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command (default: bash -l)")
    sp.set_defaults(fn=cmd_image)


def cmd_image(args: argparse.Namespace) -> int:
    if args.image_cmd == "shell":
        if args.timeout is not None and args.timeout <= 0:
            raise ConfigError(f"image shell: --timeout must be positive seconds, not {args.timeout:g}")
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        img = image.ensure(args.image, mirror=args.mirror)
        return shell.run(img, [Path(b) for b in args.bind], command, args.timeout)
    if args.image_cmd == "box":
        img = image.ensure(args.recipe, mirror=args.mirror)
        print(f"{box.ensure(img)}  (vagrant box {box.name(img)})")
    elif args.image_cmd == "build":
        img = image.ensure(args.recipe, mirror=args.mirror)
        print(f"{img.dir}  ({img.manifest['kernel']}, built in {img.manifest['build_seconds']} s)")
    else:
        for img in image.list_cached():
            m = img.manifest
            size = sum(f.stat().st_size for f in img.dir.iterdir()) >> 20
            print(f"{m['name']:14} {m['digest']}  kernel {m['kernel']}  {size} MiB  built {m['built']}  {img.dir}")
    return 0
