"""Load and validate feature-set files (``feature_sets/*.yaml``).

A file declares the query params and an ordered list of features; loading validates every
feature and raises :class:`~esrank.core.errors.InputError` naming ``file:line`` and the feature.
Each template is checked by its language's check (esrank.features.templates); pushing and
diffing against the engine is esrank.features.sync.

>>> fs = load_feature_set("feature_sets/chorus.yaml")       # doctest: +SKIP
>>> fs.engine_name                                          # doctest: +SKIP
'chorus@3f2a9c01be'

Besides the plugin's template languages, a feature may be ``vector_cosine``: the cosine
between a vector param and a vector field, which the engine seam renders for each engine
(esrank.engine.dialect).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from esrank.core.errors import InputError
from esrank.core.feature_set import Feature, FeatureSet, QueryParam
from esrank.engine.dialect import WINDOW_PARAM
from esrank.features.nodes import YamlFile, kind_of, line_of
from esrank.features.params import SHOPPER_PARAMS
from esrank.features.templates import CHECKS, TEMPLATE_LANGUAGES, check_script_references

PARAM_TYPES = ("string", "number", "vector", "weights")
PARAM_SOURCES = ("query", "shopper", "cross_encoder")
FILE_SUFFIXES = (".yaml", ".yml", ".json")

_SET_KEYS = ("name", "description", "extends", "params", "features")
_PARAM_KEYS = ("type", "dims", "description", "source")
_FEATURE_KEYS = ("name", "params", "template_language", "template", "description")
_SET_NAME = re.compile(r"[A-Za-z0-9_-]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


class _Parser(YamlFile):
    """Walks the composed YAML nodes so every error can name its line."""

    def __init__(self, text: str, source: str, chain: tuple[str, ...] = ()):
        self.chain = (*chain, str(Path(source).resolve()))  # files being loaded (extends)
        super().__init__(text, source)

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
            raise self.error(f"features: expected a non-empty list, found {kind_of(node)}", node)
        features: list[Feature] = list(inherited)
        first_line: dict[str, int | str] = {f.name: "the extended set" for f in inherited}
        for item in node.value:
            feature = self.feature(item, params, features)
            if feature.name in first_line:
                where = first_line[feature.name]
                raise self.error(f"duplicate feature name (first defined "
                                 f"{'at line ' if isinstance(where, int) else 'in '}{where})",
                                 item, feature.name)
            first_line[feature.name] = line_of(item)
            features.append(feature)
        check_script_references(self, node, features, len(inherited))
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
        referenced = CHECKS[language](self, template, template_node, name, listed, params,
                                      earlier)
        unused = [p for p in listed if p not in referenced]
        if unused:
            raise self.error(f"param {unused[0]!r} is listed but the template never uses it",
                             entries["params"][1], name)
        description = self.string(entries["description"][1], "description", name) \
            if "description" in entries else ""
        return Feature(name=name, params=tuple(listed), template_language=language,
                       template=template, description=description, line=line_of(node))

    def feature_params(self, entries: dict[str, tuple[yaml.Node, yaml.Node]],
                       declared: dict[str, QueryParam], feature: str) -> list[str]:
        if "params" not in entries:
            return []
        node = entries["params"][1]
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(f"params: expected a list of param names, found {kind_of(node)}",
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
