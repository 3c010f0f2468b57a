"""jinja2 rendering of every generated file: QEMU argv, guest scripts, image files."""

from __future__ import annotations

import re
import shlex
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from orchestrator.paths import TEMPLATES

if TYPE_CHECKING:
    import jinja2

# XML 1.0 has no place for most control characters (a console's ESC, a stray NUL): dropped
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(value: Any) -> str:
    """Text or attribute value for an XML file: escaped, control characters dropped."""
    import markupsafe

    return str(markupsafe.escape(_NOT_XML.sub("", str(value))))


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    import jinja2  # here, not at the top: a command that renders nothing (tbctl ssh) starts without it

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    )
    env.filters["shquote"] = lambda v: shlex.quote(str(v))
    env.filters["py"] = repr  # a Python literal (str, int, float, bool, None) for generated scripts
    env.filters["xml"] = _xml
    return env


def render(template: str, **context: Any) -> str:
    """Render templates/<template> with `context`; an undefined variable is an error, not ''."""
    return _env().get_template(template).render(**context)
