"""Hardened YAML for space files and `--set` values: size, depth and alias limits.

Hostile YAML (an alias bomb, deep nesting, a huge number) fails here in well under a second
with one line, before anything expands it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from models.config import short, short_text

# Far beyond any real space; past them a file is a mistake, and reading it would take long.
MAX_YAML_CHARS = 64 * 1024
MAX_YAML_DEPTH = 32


class UnsupportedYaml(yaml.MarkedYAMLError):
    """YAML that space files and `--set` values may not use; `problem` says what and the fix."""


class YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads 1e-3 as a number (YAML 1.1 wants 1.0e-3 and gives a string).

    It refuses aliases and deep nesting as it composes, before an alias bomb can expand or a
    deep list exhaust the stack, and turns a scalar it cannot construct into a YAML error.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise UnsupportedYaml(
                problem=f"YAML aliases (*{short_text(event.anchor, 40)}) are not supported in "
                "space files or --set values; write the values out",
                problem_mark=event.start_mark,
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise _too_deep(event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        """The scanner reads ahead through nested `[`/`{` (slowly); stop it at the limit."""
        if self.flow_level >= MAX_YAML_DEPTH:
            raise _too_deep(self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError):
            kind = short_text(node.tag.rpartition(":")[2], 30)
            raise UnsupportedYaml(
                problem=f"cannot read {short(node.value)} as a YAML {kind}; write a plain value",
                problem_mark=node.start_mark,
            ) from None


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _too_deep(mark: yaml.Mark) -> UnsupportedYaml:
    return UnsupportedYaml(
        problem=f"values nested more than {MAX_YAML_DEPTH} levels deep are not supported; "
        "flatten the value",
        problem_mark=mark,
    )


def load_yaml(text: str) -> Any:
    """Parse YAML text with YamlLoader; errors are yaml.YAMLError (UnsupportedYaml among them)."""
    if len(text) > MAX_YAML_CHARS:
        raise UnsupportedYaml(
            problem=f"{len(text):,} characters of YAML are too many (at most {MAX_YAML_CHARS:,}); "
            "a search space is a few KB"
        )
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line saying where YAML went wrong and what was wrong."""
    mark = getattr(exc, "problem_mark", None)
    line = f"line {mark.line + 1}" if mark else ""
    if isinstance(exc, UnsupportedYaml):
        return f"{line}: {exc.problem}" if line else str(exc.problem)
    what = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    what = f"{context}: {what}" if context else what
    return f"not valid YAML{' at ' + line if line else ''}: {short_text(what, 160)}"
