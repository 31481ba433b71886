"""A feature-set file's composed YAML nodes, read so that every error names its line.

The parser (esrank.features.parser) and the template checks (esrank.features.templates) read
values through a :class:`YamlFile`, and raise its :meth:`YamlFile.error`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from esrank.core.errors import InputError


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def kind_of(node: yaml.Node) -> str:
    """What a node holds, for "expected ..., found ..." messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}" if node.value != "" else "nothing"


class YamlFile:
    """One file's root node (None when empty) and the checked reads of its nodes."""

    def __init__(self, text: str, source: str):
        self.source = source
        self._loader = yaml.SafeLoader(text)
        try:
            self.root = self._loader.get_single_node()
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            problem = getattr(e, "problem", None) or str(e)
            context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
            if context and context_mark and context_mark is not mark:
                problem += f" ({context} started at line {context_mark.line + 1})"
            raise InputError(f"malformed YAML: {problem}", source=source,
                             line=mark.line + 1 if mark else None) from e

    def error(self, message: str, node: yaml.Node | None, feature: str | None = None):
        prefix = f"feature {feature!r}: " if feature else ""
        return InputError(prefix + message, source=self.source,
                          line=line_of(node) if node is not None else None)

    def value(self, node: yaml.Node) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            raise self.error(f"malformed YAML: {getattr(e, 'problem', None) or e}", node) from e

    def mapping(self, node: yaml.Node, allowed: Iterable[str], what: str,
                feature: str | None = None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """A mapping node's entries as ``key -> (key node, value node)``; keys checked."""
        pre = f"{what}: " if what else ""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"{pre}expected a mapping, found {kind_of(node)}", node, feature)
        allowed = tuple(allowed)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                raise self.error(f"{pre}expected string keys, found {key!r}", key_node,
                                 feature)
            if allowed and key not in allowed:
                raise self.error(f"{pre}unknown key {key!r} (expected one of: "
                                 f"{', '.join(allowed)})", key_node, feature)
            if key in out:
                raise self.error(f"{pre}duplicate key {key!r} (first at line "
                                 f"{line_of(out[key][0])})", key_node, feature)
            out[key] = (key_node, value_node)
        return out

    def string(self, node: yaml.Node, what: str, feature: str | None = None) -> str:
        value = self.value(node)
        if not isinstance(value, str):
            raise self.error(f"{what}: expected a string, found {kind_of(node)}", node, feature)
        return value
