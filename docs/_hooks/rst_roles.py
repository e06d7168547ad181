"""Docstrings in spikeforge use reStructuredText roles (``:class:`~spikeforge.models.TwinNet```) and literals
(````x````); the site is Markdown. :func:`rst_to_markdown` turns them into Markdown code spans, and
:class:`RstRoles` applies it to every docstring mkdocstrings renders (a griffe extension, configured in
``mkdocs.yml`` under the python handler's ``extensions``)."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?\w+:`(~?)([^`<]*?)(?:\s*<([^`>]+)>)?`")


def _role(match: re.Match) -> str:
    tilde, text, target = match.groups()
    if target:  # :role:`text <target>`
        return f"`{text.strip()}`"
    return f"`{text.rsplit('.', 1)[-1] if tilde else text}`"


def rst_to_markdown(text: str) -> str:
    """Roles to code spans, ````x```` to ```x```, ``\\ `` escapes dropped, a closing ``::`` to ``:``."""
    text = _ROLE.sub(_role, text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    text = text.replace("\\ ", "")
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.M)


class RstRoles(griffe.Extension):
    """Rewrite every docstring to Markdown before mkdocstrings renders it."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
