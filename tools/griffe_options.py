"""A griffe extension for the documentation site: each field of ``ces_logging.Options`` rendered with the
documentation, default, unit and environment variable its ``option()`` declaration gives.

Read from the declarations themselves (``Options.fields()``), so the reference page cannot differ from what
``help(ces_logging.Options)`` shows. mkdocs.yml loads it (``extensions:``).
"""

from __future__ import annotations

from typing import Any

import griffe

OPTIONS = "ces_logging.options.Options"


class OptionsFields(griffe.Extension):
    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if cls.path != OPTIONS:
            return
        from ces_logging.options import Options

        for field in Options.fields():
            attr = cls.members.get(field.name)
            if not isinstance(attr, griffe.Attribute):
                raise RuntimeError(f"{OPTIONS}.{field.name} not found by griffe: is it still declared there?")
            attr.value = repr(field.default)  # not the option(...) call that declares it
            attr.docstring = griffe.Docstring(field.text(), parent=attr)
