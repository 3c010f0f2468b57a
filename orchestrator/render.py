"""jinja2 rendering of every generated file: QEMU argv, guest scripts, image files."""

from __future__ import annotations

import shlex
from functools import lru_cache
from typing import Any

import jinja2

from orchestrator.paths import TEMPLATES


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["shquote"] = lambda v: shlex.quote(str(v))
    env.filters["py"] = repr  # a Python literal (str, int, float, bool, None) for generated scripts
    return env


def render(template: str, **context: Any) -> str:
    """Render templates/<template> with `context`; an undefined variable is an error, not ''."""
    return _env().get_template(template).render(**context)
