"""Load and validate feature-set files (``feature_sets/*.yaml``) and diff them against the engine.

A file declares the query params and an ordered list of features; loading validates every
feature and raises :class:`~esrank.core.errors.InputError` naming ``file:line`` and the feature.

>>> fs = load_feature_set("feature_sets/chorus.yaml")       # doctest: +SKIP
>>> fs.engine_name                                          # doctest: +SKIP
'chorus@3f2a9c01be'

Besides the plugin's template languages, a feature may be ``vector_cosine``: the cosine
between a vector param and a vector field, which the engine seam renders for each engine
(esrank.engine.dialect).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import chevron
import yaml
from chevron.tokenizer import ChevronError, tokenize

from esrank.core.errors import InputError
from esrank.core.feature_set import Feature, FeatureSet, QueryParam
from esrank.engine.base import Engine
from esrank.engine.dialect import COSINE, WINDOW_PARAM, Dialect
from esrank.features.params import SHOPPER_PARAMS

TEMPLATE_LANGUAGES = ("mustache", "derived_expression", "script_feature", COSINE)
PARAM_TYPES = ("string", "number", "vector", "weights")
PARAM_SOURCES = ("query", "shopper", "cross_encoder")
WEIGHT_KEYS = ("term", "weight")  # the fields of each element of a `weights` param
FILE_SUFFIXES = (".yaml", ".yml", ".json")

_SET_KEYS = ("name", "description", "extends", "params", "features")
_PARAM_KEYS = ("type", "dims", "description", "source")
_FEATURE_KEYS = ("name", "params", "template_language", "template", "description")
_SET_NAME = re.compile(r"[A-Za-z0-9_-]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Variables in a (Lucene) derived expression: identifiers not inside a number and not calls.
_EXPRESSION_VAR = re.compile(r"(?<![\w.])([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
_TO_JSON = "toJson"  # the plugin's mustache lambda: {{#toJson}}param{{/toJson}}
_SAMPLE: dict[str, Any] = {"string": "sample", "number": 1,
                           "weights": [{"term": "sample", "weight": 1.0},
                                       {"term": "other", "weight": 0.5}]}


def load_feature_set(path: str | Path, _chain: tuple[str, ...] = ()) -> FeatureSet:
    """Read and validate one feature-set file (YAML; JSON is valid YAML too).

    A file may `extends: other.yaml` (relative to it): the other set's params and features
    come first, in its order, and the file's own follow.

    >>> load_feature_set("feature_sets/chorus.yaml").feature_names[:2]   # doctest: +SKIP
    ('title_bm25', 'title_phrase')
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read feature-set file: {e.strerror}", source=str(path)) from e
    return _Parser(text, str(path), _chain).feature_set()


def load_feature_sets(path: str | Path) -> list[FeatureSet]:
    """Load a feature-set file, or every ``*.yaml``/``*.yml``/``*.json`` in a directory.

    Files are read in sorted order; two files declaring the same set name is an error.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FILE_SUFFIXES)
        if not files:
            raise InputError(f"no feature-set files ({', '.join(FILE_SUFFIXES)}) found",
                             source=str(path))
    elif path.is_file():
        files = [path]
    else:
        raise InputError("no such feature-set file or directory", source=str(path))
    sets: list[FeatureSet] = []
    seen: dict[str, str] = {}
    for file in files:
        fs = load_feature_set(file)
        if fs.name in seen:
            raise InputError(f"feature set {fs.name!r} is also defined in {seen[fs.name]}",
                             source=str(file))
        seen[fs.name] = str(file)
        sets.append(fs)
    return sets


def diff_feature_sets(local: FeatureSet, engine_features: list[dict],
                      dialect: Dialect) -> dict[str, list[str]]:
    """Compare a local set, as `dialect` stores it, with the features the engine holds (plugin
    schema), by name.

    Returns ``{"added": [...], "removed": [...], "changed": [...], "same": [...]}``:
    added/changed/same in local order, removed in engine order.
    """
    remote: dict[str, dict[str, Any]] = {}
    for i, feature in enumerate(engine_features):
        if not isinstance(feature, dict) or not isinstance(feature.get("name"), str):
            raise InputError(f"engine feature #{i} has no name: expected a dict with a "
                             f"'name', found {feature!r:.80}", source="engine feature set")
        remote[feature["name"]] = _normalized(feature)
    diff: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "same": []}
    for feature in local.features:
        if feature.name not in remote:
            diff["added"].append(feature.name)
        elif remote[feature.name] == _normalized(dialect.feature(feature)):
            diff["same"].append(feature.name)
        else:
            diff["changed"].append(feature.name)
    local_names = set(local.feature_names)
    diff["removed"] = [name for name in remote if name not in local_names]
    return diff


def push_feature_sets(engine: Engine, sets: Iterable[FeatureSet]) -> list[dict[str, Any]]:
    """Create the store if needed and store each set under its versioned name.

    Existing versions are never overwritten, so a model built on one keeps working.
    """
    engine.ensure_store()
    return [{"name": fs.name, "engine_name": fs.engine_name,
             "created": engine.put_feature_set(fs)} for fs in sets]


def diff_against_engine(engine: Engine, local: FeatureSet) -> dict[str, Any]:
    """Compare a local set with the engine: its own version if stored, else the closest one."""
    base = {"name": local.name, "engine_name": local.engine_name}
    if not engine.store_exists():
        return {**base, "status": "not in engine", "compared_with": None}
    versions = engine.list_feature_sets(prefix=f"{local.name}@")
    versions = {k: v for k, v in versions.items() if k.split("@", 1)[0] == local.name}
    if not versions:
        return {**base, "status": "not in engine", "compared_with": None}
    diffs = {name: diff_feature_sets(local, doc.get("features", []), engine.dialect)
             for name, doc in versions.items()}
    name = (local.engine_name if local.engine_name in diffs else
            min(diffs, key=lambda n: (sum(len(diffs[n][k]) for k in
                                          ("added", "removed", "changed")), n)))
    diff = diffs[name]
    same = not (diff["added"] or diff["removed"] or diff["changed"])
    return {**base, "status": "up to date" if same else "differs", "compared_with": name,
            "versions_in_engine": sorted(versions), **diff}


def _normalized(feature: dict[str, Any]) -> dict[str, Any]:
    """Plugin defaults filled in; a string template that is a JSON object compares as one."""
    template = feature.get("template")
    if isinstance(template, str):
        try:
            parsed = json.loads(template)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            template = parsed
    return {
        "params": list(feature.get("params") or []),
        "template_language": feature.get("template_language") or "mustache",
        "template": template,
    }


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}" if node.value != "" else "nothing"


class _Parser:
    """Walks the composed YAML nodes so every error can name its line."""

    def __init__(self, text: str, source: str, chain: tuple[str, ...] = ()):
        self.source = source
        self.chain = (*chain, str(Path(source).resolve()))  # files being loaded (extends)
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
                          line=_line(node) if node is not None else None)

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
            raise self.error(f"{pre}expected a mapping, found {_kind(node)}", node, feature)
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
                                 f"{_line(out[key][0])})", key_node, feature)
            out[key] = (key_node, value_node)
        return out

    def string(self, node: yaml.Node, what: str, feature: str | None = None) -> str:
        value = self.value(node)
        if not isinstance(value, str):
            raise self.error(f"{what}: expected a string, found {_kind(node)}", node, feature)
        return value

    def feature_set(self) -> FeatureSet:
        if self.root is None:
            raise InputError("empty feature-set file: expected a mapping with 'name' and "
                             "'features'", source=self.source, line=1)
        top = self.mapping(self.root, _SET_KEYS, "feature set")
        for key in ("name", "features"):
            if key not in top:
                raise self.error(f"feature set: missing required key {key!r}", self.root)
        name_node = top["name"][1]
        name = self.string(name_node, "feature set name")
        if not _SET_NAME.fullmatch(name):
            raise self.error(f"feature set name {name!r}: expected only letters, digits, '_' "
                             "and '-' ('@' is reserved for the engine's versioned name)",
                             name_node)
        description = self.string(top["description"][1], "description") \
            if "description" in top else ""
        base = self.base(top["extends"][1]) if "extends" in top else None
        params = self.params(top["params"][1]) if "params" in top else ()
        if base is not None:
            again = [p.name for p in params if p.name in {b.name for b in base.params}]
            if again:
                raise self.error(f"param {again[0]!r} is already declared in {base.source}",
                                 top["params"][1])
            params = (*base.params, *params)
        features = self.features(top["features"][1], {p.name: p for p in params},
                                 base.features if base else ())
        return FeatureSet(name=name, description=description, params=params,
                          features=features, source=self.source)

    def base(self, node: yaml.Node) -> FeatureSet:
        """The feature set named by `extends`, loaded relative to this file."""
        path = Path(self.source).parent / self.string(node, "extends")
        if str(path.resolve()) in self.chain:
            raise self.error(f"extends {path}: the files extend each other in a cycle", node)
        return load_feature_set(path, self.chain)

    def params(self, node: yaml.Node) -> tuple[QueryParam, ...]:
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return ()
        out = []
        for name, (key_node, spec_node) in self.mapping(node, (), "params").items():
            what = f"param {name!r}"
            if not _IDENTIFIER.fullmatch(name):
                raise self.error(f"{what}: expected an identifier ([A-Za-z_][A-Za-z0-9_]*)",
                                 key_node)
            if name == WINDOW_PARAM:
                raise self.error(f"{what}: the name is reserved (esrank passes the rescore "
                                 "window's ids in it)", key_node)
            spec = self.mapping(spec_node, _PARAM_KEYS, what)
            if "type" not in spec:
                raise self.error(f"{what}: missing 'type' (one of: {', '.join(PARAM_TYPES)})",
                                 spec_node)
            type_node = spec["type"][1]
            ptype = self.value(type_node)
            if ptype not in PARAM_TYPES:
                raise self.error(f"{what}: type expected one of {', '.join(PARAM_TYPES)}, "
                                 f"found {ptype!r}", type_node)
            dims = None
            if ptype == "vector":
                if "dims" not in spec:
                    raise self.error(f"{what}: a vector param needs 'dims'", spec_node)
                dims = self.value(spec["dims"][1])
                if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
                    raise self.error(f"{what}: dims expected a positive integer, found "
                                     f"{dims!r}", spec["dims"][1])
            elif "dims" in spec:
                raise self.error(f"{what}: 'dims' applies only to vector params, found type "
                                 f"{ptype!r}", spec["dims"][0])
            description = self.string(spec["description"][1], f"{what} description") \
                if "description" in spec else ""
            source = self.value(spec["source"][1]) if "source" in spec else "query"
            if source not in PARAM_SOURCES:
                raise self.error(f"{what}: source expected one of {', '.join(PARAM_SOURCES)}, "
                                 f"found {source!r}", spec["source"][1])
            if source == "shopper" and SHOPPER_PARAMS.get(name) != ptype:
                known = ", ".join(f"{n} ({t})" for n, t in SHOPPER_PARAMS.items())
                raise self.error(f"{what}: esrank fills these shopper params: {known}; found "
                                 f"{name!r} of type {ptype!r}", key_node)
            if source == "query" and ptype in ("number", "weights"):
                raise self.error(f"{what}: a {ptype} param cannot come from the query text; "
                                 "write source: shopper or cross_encoder", type_node)
            if source == "cross_encoder" and ptype != "weights":
                raise self.error(f"{what}: the cross-encoder fills a weights param (doc id -> "
                                 f"score), found type {ptype!r}", type_node)
            out.append(QueryParam(name=name, type=ptype, dims=dims, description=description,
                                  source=source))
        return tuple(out)

    def features(self, node: yaml.Node, params: dict[str, QueryParam],
                 inherited: tuple[Feature, ...] = ()) -> tuple[Feature, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(f"features: expected a non-empty list, found {_kind(node)}", node)
        features: list[Feature] = list(inherited)
        first_line: dict[str, int | str] = {f.name: "the extended set" for f in inherited}
        for item in node.value:
            feature = self.feature(item, params, features)
            if feature.name in first_line:
                where = first_line[feature.name]
                raise self.error(f"duplicate feature name (first defined "
                                 f"{'at line ' if isinstance(where, int) else 'in '}{where})",
                                 item, feature.name)
            first_line[feature.name] = _line(item)
            features.append(feature)
        self.check_script_references(node, features, len(inherited))
        return tuple(features)

    def feature(self, node: yaml.Node, params: dict[str, QueryParam],
                earlier: list[Feature]) -> Feature:
        # Name the feature in every error, including an unknown key listed before 'name'.
        pairs = node.value if isinstance(node, yaml.MappingNode) else []
        named = [v.value for k, v in pairs if k.value == "name" and isinstance(v, yaml.ScalarNode)]
        entries = self.mapping(node, _FEATURE_KEYS, "" if named else "feature",
                               named[0] if named else None)
        if "name" not in entries:
            raise self.error("feature: missing required key 'name'", node)
        name = self.string(entries["name"][1], "feature name")
        if not _IDENTIFIER.fullmatch(name):
            raise self.error("name: expected an identifier ([A-Za-z_][A-Za-z0-9_]*)",
                             entries["name"][1], name)
        if "template" not in entries:
            raise self.error("missing required key 'template'", node, name)
        listed = self.feature_params(entries, params, name)
        language = "mustache"
        if "template_language" in entries:
            language = self.string(entries["template_language"][1], "template_language", name)
            if language not in TEMPLATE_LANGUAGES:
                raise self.error(f"template_language expected one of "
                                 f"{', '.join(TEMPLATE_LANGUAGES)}, found {language!r}",
                                 entries["template_language"][1], name)
        template_node = entries["template"][1]
        template = self.value(template_node)
        check: Callable[..., set[str]] = {
            "mustache": self.check_mustache,
            "derived_expression": self.check_expression,
            "script_feature": self.check_script,
            COSINE: self.check_cosine,
        }[language]
        referenced = check(template, template_node, name, listed, params, earlier)
        unused = [p for p in listed if p not in referenced]
        if unused:
            raise self.error(f"param {unused[0]!r} is listed but the template never uses it",
                             entries["params"][1], name)
        description = self.string(entries["description"][1], "description", name) \
            if "description" in entries else ""
        return Feature(name=name, params=tuple(listed), template_language=language,
                       template=template, description=description, line=_line(node))

    def feature_params(self, entries: dict[str, tuple[yaml.Node, yaml.Node]],
                       declared: dict[str, QueryParam], feature: str) -> list[str]:
        if "params" not in entries:
            return []
        node = entries["params"][1]
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(f"params: expected a list of param names, found {_kind(node)}",
                             node, feature)
        names: list[str] = []
        for item in node.value:
            param = self.string(item, "params entry", feature)
            if param not in declared:
                raise self.error(f"unknown param {param!r}: expected one declared in the "
                                 f"top-level params ({', '.join(declared) or 'none'})",
                                 item, feature)
            if param in names:
                raise self.error(f"param {param!r} is listed twice", item, feature)
            names.append(param)
        return names

    # -- template checks: each returns the set of params the template references ------------

    def check_mustache(self, template: Any, node: yaml.Node, feature: str,
                       listed: list[str], declared: dict[str, QueryParam],
                       earlier: list[Feature]) -> set[str]:
        if isinstance(template, dict):
            # The plugin serialises an object template to JSON and renders that string.
            text = json.dumps(template)
        elif isinstance(template, str):
            text = template
        else:
            raise self.error(f"mustache template: expected a mapping or a string, found "
                             f"{_kind(node)}", node, feature)
        try:
            tokens = list(tokenize(text))
        except ChevronError as e:
            reason = " ".join(str(e).split())
            raise self.error(f"mustache template does not parse: {reason}", node, feature) from e
        referenced: set[str] = set()
        to_json: list[str] | None = None  # literal text inside an open {{#toJson}}
        sections: list[str] = []  # open {{#weights}} sections: {{term}}, {{weight}} inside
        for kind, key in tokens:
            key = key.strip()
            if to_json is not None:
                if (kind, key) == ("end", _TO_JSON):
                    referenced.add(self.reference("".join(to_json).strip(), node, feature,
                                                  listed, "{{#toJson}}"))
                    to_json = None
                elif kind == "literal":
                    to_json.append(key)
                else:
                    raise self.error("{{#toJson}} expected a param name only, found a tag "
                                     f"{key!r} inside", node, feature)
            elif kind == "section" and key == _TO_JSON:
                if isinstance(template, dict):
                    # Inside an object template the list lands in a JSON string ("[0.1, ...]").
                    raise self.error("{{#toJson}} in an object template renders a string, not a "
                                     "JSON list: write this template as a string", node, feature)
                to_json = []
            elif kind == "partial":
                raise self.error(f"mustache partials are not supported, found {{{{>{key}}}}}",
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
                referenced.add(self.reference(key, node, feature, listed, "template"))
        self.check_rendered_json(text, node, feature, listed, declared)
        return referenced

    def reference(self, key: str, node: yaml.Node, feature: str, listed: list[str],
                  where: str) -> str:
        if key not in listed:
            raise self.error(f"{where} uses {key!r} but the feature's params are "
                             f"[{', '.join(listed)}]", node, feature)
        return key

    def check_rendered_json(self, text: str, node: yaml.Node, feature: str, listed: list[str],
                            declared: dict[str, QueryParam]) -> None:
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
            raise self.error(f"template is not valid JSON once rendered with sample values "
                             f"({e}); rendered: {rendered[:200]!r}", node, feature) from e

    def check_expression(self, template: Any, node: yaml.Node, feature: str,
                         listed: list[str], declared: dict[str, QueryParam],
                         earlier: list[Feature]) -> set[str]:
        if not isinstance(template, str) or not template.strip():
            raise self.error(f"derived_expression template: expected an expression string, "
                             f"found {_kind(node)}", node, feature)
        before = {f.name for f in earlier}
        referenced: set[str] = set()
        for var in _EXPRESSION_VAR.findall(template):
            if var in before:
                continue
            if var not in listed:
                raise self.error(f"derived_expression uses {var!r}: expected a feature defined "
                                 f"earlier in the set or a param in the feature's params "
                                 f"[{', '.join(listed)}]", node, feature)
            referenced.add(var)
        return referenced

    def check_script(self, template: Any, node: yaml.Node, feature: str,
                     listed: list[str], declared: dict[str, QueryParam],
                     earlier: list[Feature]) -> set[str]:
        entries = self.mapping(node, (), "script_feature template", feature)
        for key in ("lang", "source"):
            if key not in entries:
                raise self.error(f"script_feature template: missing {key!r}", node, feature)
            self.string(entries[key][1], f"script_feature template {key}", feature)
        if "params" not in entries:
            return set()
        script_params = self.mapping(entries["params"][1], (), "script_feature params",
                                     feature)
        if "feature_names" in script_params:
            names_node = script_params["feature_names"][1]
            names = self.value(names_node)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise self.error(f"script_feature params.feature_names: expected a list of "
                                 f"feature names, found {_kind(names_node)}", names_node,
                                 feature)
        referenced: set[str] = set()
        if "extra_script_params" in script_params:
            extra_node = script_params["extra_script_params"][1]
            # Keys are the names the script sees (params.<key>); values are query params.
            extra = self.mapping(extra_node, (), "script_feature extra_script_params", feature)
            for script_name, (_, value_node) in extra.items():
                value = self.value(value_node)
                if value not in listed:
                    raise self.error(f"extra_script_params.{script_name}: expected a param in "
                                     f"the feature's params [{', '.join(listed)}], found "
                                     f"{value!r}", value_node, feature)
                referenced.add(value)
        return referenced

    def check_cosine(self, template: Any, node: yaml.Node, feature: str, listed: list[str],
                     declared: dict[str, QueryParam], earlier: list[Feature]) -> set[str]:
        entries = self.mapping(node, ("field",), f"{COSINE} template", feature)
        if "field" not in entries:
            raise self.error(f"{COSINE} template: missing 'field' (the vector field of the "
                             "index)", node, feature)
        self.string(entries["field"][1], f"{COSINE} template field", feature)
        vectors = [p for p in listed if declared[p].type == "vector"]
        if len(listed) != 1 or len(vectors) != 1:
            raise self.error(f"{COSINE}: expected params to list exactly one vector param, "
                             f"found [{', '.join(listed)}]", node, feature)
        return set(listed)

    def check_script_references(self, node: yaml.SequenceNode, features: list[Feature],
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
                    line_node = self._names_node(item) or item
                    raise self.error(f"script_feature params.feature_names: {ref!r} is not "
                                     f"another feature of this set (features: "
                                     f"{', '.join(sorted(names - {feature.name})) or 'none'})",
                                     line_node, feature.name)

    def _names_node(self, item: yaml.Node) -> yaml.Node | None:
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
