"""The template checks of a feature-set file: each template language's check that the
template parses, uses only the feature's listed params, and uses every one of them.

Each check takes the file (:class:`~esrank.features.nodes.YamlFile`, for its line-naming
errors), the template and its node, the feature's name and listed params, the set's declared
params and the features before it, and returns the params the template references.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import chevron
import yaml
from chevron.tokenizer import ChevronError, tokenize

from esrank.core.feature_set import Feature, QueryParam
from esrank.engine.dialect import COSINE
from esrank.features.nodes import YamlFile, kind_of

WEIGHT_KEYS = ("term", "weight")  # the fields of each element of a `weights` param
# Variables in a (Lucene) derived expression: identifiers not inside a number and not calls.
_EXPRESSION_VAR = re.compile(r"(?<![\w.])([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
_TO_JSON = "toJson"  # the plugin's mustache lambda: {{#toJson}}param{{/toJson}}
_SAMPLE: dict[str, Any] = {"string": "sample", "number": 1,
                           "weights": [{"term": "sample", "weight": 1.0},
                                       {"term": "other", "weight": 0.5}]}


def check_mustache(doc: YamlFile, template: Any, node: yaml.Node, feature: str,
                   listed: list[str], declared: dict[str, QueryParam],
                   earlier: list[Feature]) -> set[str]:
    if isinstance(template, dict):
        # The plugin serialises an object template to JSON and renders that string.
        text = json.dumps(template)
    elif isinstance(template, str):
        text = template
    else:
        raise doc.error(f"mustache template: expected a mapping or a string, found "
                        f"{kind_of(node)}", node, feature)
    try:
        tokens = list(tokenize(text))
    except ChevronError as e:
        reason = " ".join(str(e).split())
        raise doc.error(f"mustache template does not parse: {reason}", node, feature) from e
    referenced: set[str] = set()
    to_json: list[str] | None = None  # literal text inside an open {{#toJson}}
    sections: list[str] = []  # open {{#weights}} sections: {{term}}, {{weight}} inside
    for kind, key in tokens:
        key = key.strip()
        if to_json is not None:
            if (kind, key) == ("end", _TO_JSON):
                referenced.add(_reference(doc, "".join(to_json).strip(), node, feature,
                                              listed, "{{#toJson}}"))
                to_json = None
            elif kind == "literal":
                to_json.append(key)
            else:
                raise doc.error("{{#toJson}} expected a param name only, found a tag "
                                f"{key!r} inside", node, feature)
        elif kind == "section" and key == _TO_JSON:
            if isinstance(template, dict):
                # Inside an object template the list lands in a JSON string ("[0.1, ...]").
                raise doc.error("{{#toJson}} in an object template renders a string, not a "
                                "JSON list: write this template as a string", node, feature)
            to_json = []
        elif kind == "partial":
            raise doc.error(f"mustache partials are not supported, found {{{{>{key}}}}}",
                            node, feature)
        elif kind in ("section", "inverted section") and key in listed \
                and declared[key].type == "weights":
            referenced.add(key)
            sections.append(key)
        elif kind == "end" and sections and key == sections[-1]:
            sections.pop()
        elif kind in ("variable", "no escape") and sections and key in WEIGHT_KEYS:
            continue  # a field of the weights element being iterated
        elif kind in ("variable", "no escape", "section", "inverted section") and key != ".":
            referenced.add(_reference(doc, key, node, feature, listed, "template"))
    _check_rendered_json(doc, text, node, feature, listed, declared)
    return referenced


def _reference(doc: YamlFile, key: str, node: yaml.Node, feature: str, listed: list[str],
               where: str) -> str:
    if key not in listed:
        raise doc.error(f"{where} uses {key!r} but the feature's params are "
                        f"[{', '.join(listed)}]", node, feature)
    return key


def _check_rendered_json(doc: YamlFile, text: str, node: yaml.Node, feature: str,
                         listed: list[str], declared: dict[str, QueryParam]) -> None:
    """Render with sample values; the plugin needs the result to be a JSON query."""
    samples: dict[str, Any] = {}
    for name in listed:
        p = declared[name]
        samples[name] = [0.0] * (p.dims or 0) if p.type == "vector" else _SAMPLE[p.type]
    context = dict(samples)
    context[_TO_JSON] = lambda inner, _render: json.dumps(samples[inner.strip()])
    rendered = chevron.render(text, context)
    try:
        json.loads(rendered)
    except ValueError as e:
        raise doc.error(f"template is not valid JSON once rendered with sample values "
                        f"({e}); rendered: {rendered[:200]!r}", node, feature) from e


def check_expression(doc: YamlFile, template: Any, node: yaml.Node, feature: str,
                     listed: list[str], declared: dict[str, QueryParam],
                     earlier: list[Feature]) -> set[str]:
    if not isinstance(template, str) or not template.strip():
        raise doc.error(f"derived_expression template: expected an expression string, "
                        f"found {kind_of(node)}", node, feature)
    before = {f.name for f in earlier}
    referenced: set[str] = set()
    for var in _EXPRESSION_VAR.findall(template):
        if var in before:
            continue
        if var not in listed:
            raise doc.error(f"derived_expression uses {var!r}: expected a feature defined "
                            f"earlier in the set or a param in the feature's params "
                            f"[{', '.join(listed)}]", node, feature)
        referenced.add(var)
    return referenced


def check_script(doc: YamlFile, template: Any, node: yaml.Node, feature: str,
                 listed: list[str], declared: dict[str, QueryParam],
                 earlier: list[Feature]) -> set[str]:
    entries = doc.mapping(node, (), "script_feature template", feature)
    for key in ("lang", "source"):
        if key not in entries:
            raise doc.error(f"script_feature template: missing {key!r}", node, feature)
        doc.string(entries[key][1], f"script_feature template {key}", feature)
    if "params" not in entries:
        return set()
    script_params = doc.mapping(entries["params"][1], (), "script_feature params",
                                feature)
    if "feature_names" in script_params:
        names_node = script_params["feature_names"][1]
        names = doc.value(names_node)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise doc.error(f"script_feature params.feature_names: expected a list of "
                            f"feature names, found {kind_of(names_node)}", names_node,
                            feature)
    referenced: set[str] = set()
    if "extra_script_params" in script_params:
        extra_node = script_params["extra_script_params"][1]
        # Keys are the names the script sees (params.<key>); values are query params.
        extra = doc.mapping(extra_node, (), "script_feature extra_script_params", feature)
        for script_name, (_, value_node) in extra.items():
            value = doc.value(value_node)
            if value not in listed:
                raise doc.error(f"extra_script_params.{script_name}: expected a param in "
                                f"the feature's params [{', '.join(listed)}], found "
                                f"{value!r}", value_node, feature)
            referenced.add(value)
    return referenced


def check_cosine(doc: YamlFile, template: Any, node: yaml.Node, feature: str, listed: list[str],
                 declared: dict[str, QueryParam], earlier: list[Feature]) -> set[str]:
    entries = doc.mapping(node, ("field",), f"{COSINE} template", feature)
    if "field" not in entries:
        raise doc.error(f"{COSINE} template: missing 'field' (the vector field of the "
                        "index)", node, feature)
    doc.string(entries["field"][1], f"{COSINE} template field", feature)
    vectors = [p for p in listed if declared[p].type == "vector"]
    if len(listed) != 1 or len(vectors) != 1:
        raise doc.error(f"{COSINE}: expected params to list exactly one vector param, "
                        f"found [{', '.join(listed)}]", node, feature)
    return set(listed)


def check_script_references(doc: YamlFile, node: yaml.SequenceNode, features: list[Feature],
                            inherited: int = 0) -> None:
    """script_feature feature_names must name other features of this set (the file's
    own features, after the `inherited` ones, are checked)."""
    names = {f.name for f in features}
    for item, feature in zip(node.value, features[inherited:], strict=True):
        template = feature.template
        if feature.template_language != "script_feature" or not isinstance(template, dict):
            continue
        for ref in (template.get("params") or {}).get("feature_names", []):
            if ref not in names or ref == feature.name:
                line_node = _names_node(item) or item
                raise doc.error(f"script_feature params.feature_names: {ref!r} is not "
                                f"another feature of this set (features: "
                                f"{', '.join(sorted(names - {feature.name})) or 'none'})",
                                line_node, feature.name)


def _names_node(item: yaml.Node) -> yaml.Node | None:
    """The feature_names node inside a script_feature's template, for its line."""
    node = item
    for key in ("template", "params", "feature_names"):
        if not isinstance(node, yaml.MappingNode):
            return None
        found = [v for k, v in node.value if k.value == key]
        if not found:
            return None
        node = found[0]
    return node


CHECKS: dict[str, Callable[..., set[str]]] = {
    "mustache": check_mustache,
    "derived_expression": check_expression,
    "script_feature": check_script,
    COSINE: check_cosine,
}
TEMPLATE_LANGUAGES = tuple(CHECKS)
