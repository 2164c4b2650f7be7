"""Load, save and override configurations (YAML or JSON), with clear errors."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ptychopinn.atomic import atomic_write_text
from ptychopinn.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


_PLAIN_MISMATCH = {"int_parsing", "int_type", "int_from_float", "float_parsing", "float_type",
                   "string_type", "bool_parsing", "bool_type", "literal_error"}
"""Error types that only say the value is not of a union member's type (the member's
description says that already)."""


def _union_member(tag: Any) -> str | None:
    """What a pydantic union-member tag (the last part of an error's location) accepts, in
    words; None where ``tag`` is a field name or list index, not such a tag."""
    if not isinstance(tag, str):
        return None
    if tag.startswith("literal[") and tag.endswith("]"):
        return " or ".join(v.strip() for v in tag[len("literal["):-1].split(","))
    words = {"int": "an integer", "constrained-int": "an integer", "float": "a number",
             "constrained-float": "a number", "str": "a string", "constrained-str": "a string",
             "bool": "true or false"}
    return words.get(tag)


def _found(err: dict[str, Any]) -> str:
    found = err.get("input")
    if err.get("type") == "missing" or isinstance(found, dict):
        return ""
    return f"; found {found!r}"


#: The ``ptychopinn config SECTION`` that prints the keys of each config class.
CONFIG_SECTIONS = {"TrainingConfig": "train", "InferenceConfig": "infer",
                   "SimulationConfig": "simulate", "PretrainConfig": "pretrain"}


def _unknown_key_hint(title: str) -> str:
    """What an unknown key's line advises, for the config class named ``title``."""
    section = CONFIG_SECTIONS.get(title)
    if section is None:
        return "unknown key (check the spelling)"
    return f"unknown key (check the spelling; see `ptychopinn config {section}`)"


def section_mismatch(
    data: dict[str, Any], where: str, command: str, keys: set[str], others: dict[str, set[str]],
    takes: str | None = None,
) -> str | None:
    """A one-line message when the mapping ``data`` (read from ``where``) looks like the
    config of another command: most of its keys unknown to ``command`` (whose keys are
    ``keys``) but known to one of ``others`` (section name -> its keys); else None.
    ``takes``: what the message says ``command`` takes (default: the keys of
    ``ptychopinn config COMMAND``)."""
    unknown = [k for k in data if k not in keys]
    best, matched = None, []
    for name, their in others.items():
        hits = [k for k in unknown if k in their]
        if len(hits) > len(matched):
            best, matched = name, hits
    if best is None or len(matched) < max(2, len(data) / 2):
        return None
    some = ", ".join(matched[:3]) + (", ..." if len(matched) > 3 else "")
    default = (f"the keys of `ptychopinn config {command}` (write a file of them with "
               f"`ptychopinn config {command} > {command}.yaml`)")
    return (
        f"{where} looks like a `ptychopinn config {best}` file: {len(matched)} of its "
        f"{len(data)} keys ({some}) are {best} keys that {command} does not take; "
        f"{command} takes {takes or default}."
    )


def format_validation_error(exc: ValidationError, where: str, prefix: str = "") -> str:
    """One line per problem: the field path (after ``prefix``, e.g. ``"pretrain."`` for a
    mapping the user writes under that key), what was expected and what was found.

    A value that matches no member of a union (``batch_size: int | 'auto'``) is one line
    naming every accepted form (``expected an integer (greater than or equal to 1) or
    'auto'``), not one line per member.
    """
    lines = [f"{where}: invalid configuration:"]
    errors = exc.errors()
    unions: dict[tuple, list[dict[str, Any]]] = {}
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if len(loc) > 1 and _union_member(loc[-1]) is not None:
            unions.setdefault(loc[:-1], []).append(err)
    done: set[tuple] = set()
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if len(loc) > 1 and loc[:-1] in unions and len(unions[loc[:-1]]) > 1:
            if loc[:-1] in done:
                continue
            done.add(loc[:-1])
            forms = []
            for member in unions[loc[:-1]]:
                form = _union_member(member["loc"][-1])
                if member.get("type") not in _PLAIN_MISMATCH:
                    reason = str(member.get("msg", "")).removeprefix("Input should be ")
                    form += f" ({reason})"
                forms.append(form)
            path = prefix + ".".join(str(p) for p in loc[:-1])
            lines.append(f"  - {path}: expected {' or '.join(forms)}{_found(err)}")
            continue
        path = prefix + ".".join(str(p) for p in loc)
        msg = err.get("msg", "")
        if err.get("type") == "extra_forbidden":
            msg = _unknown_key_hint(exc.title)
        found_s = _found(err)
        if err.get("type") == "value_error":
            # our validators' own words (they name their keys): without pydantic's prefix
            msg = str(msg).removeprefix("Value error, ")
            if "found" in msg:
                found_s = ""  # the message already says what it found
        # a check across keys (a model validator) has no location: its words name the keys
        lines.append(f"  - {path}: {msg}{found_s}" if path else f"  - {msg}{found_s}")
    return "\n".join(lines)


def build(cls: type[T], data: dict[str, Any], where: str = "config", prefix: str = "") -> T:
    """Validate ``data`` into ``cls``, raising `ConfigError` with a readable message (its
    keys named after ``prefix``, see `format_validation_error`)."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, prefix)) from None


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON file holding one mapping."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; expected a YAML or JSON config file.")
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{p}: not a YAML/JSON text file (binary content); expected a config written "
            "like `ptychopinn config SECTION` prints it."
        ) from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise many types
        raise ConfigError(f"{p}: not valid YAML/JSON ({exc}).") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level; found {type(data).__name__}.")
    return data


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    """Load a config section (e.g. `TrainingConfig`) from YAML or JSON."""
    return build(cls, read_mapping(path), where=str(path))


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """Plain JSON-compatible data (what bundles and checkpoints store)."""
    return cfg.model_dump(mode="json")


def save_config(cfg: BaseModel, path: str | os.PathLike) -> Path:
    """Write a config atomically as YAML (``.yaml``/``.yml``) or JSON."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = to_dict(cfg)
    if p.suffix.lower() == ".json":
        text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    return atomic_write_text(p, text)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (None values are skipped)."""
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        elif isinstance(v, dict) and k not in out:
            out[k] = merge({}, v)
        else:
            out[k] = v
    return out


def with_overrides(cfg: T, overrides: dict[str, Any], where: str = "overrides") -> T:
    """A new config with nested ``overrides`` applied and validated again.

    Switching ``architecture`` or ``prior_scope`` without giving
    ``prior_iterations`` (or ``prior_amplitude_step``, ``subpixel``,
    ``prior_frc_filter``, ``prior_com_correction``) lets it default again (it was resolved for the old).
    """
    return build(type(cfg), merge_overrides(to_dict(cfg), overrides), where=where)


_RESOLVED_BY = {"prior_iterations": ("architecture", "prior_scope"),
                "prior_amplitude_step": ("prior_scope",),
                "subpixel": ("architecture", "prior_scope", "prior_iterations"),
                "prior_frc_filter": ("architecture", "prior_scope", "prior_iterations"),
                "prior_com_correction": ("architecture", "prior_scope", "prior_iterations")}
"""Model keys whose None default is resolved from other keys (`ModelConfig`)."""


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`merge`, except that an ``architecture`` or ``prior_scope`` override without
    ``prior_iterations`` drops the base's ``prior_iterations`` so it defaults for the
    new choice (a resolved or dumped config carries the old one's value); the same
    for a ``prior_scope`` override and ``prior_amplitude_step``, and for any of the
    three and ``subpixel`` / ``prior_frc_filter`` / ``prior_com_correction``."""
    base = copy.deepcopy(base)
    for b, o in ((base, overrides), (base.get("model"), overrides.get("model"))):
        if not (isinstance(b, dict) and isinstance(o, dict)):
            continue
        for key, sources in _RESOLVED_BY.items():
            if key not in o and any(o.get(k) is not None for k in sources):
                b.pop(key, None)
    return merge(base, overrides)


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse ``--set a.b=value`` items (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted KEY "
                              "(`ptychopinn config train|infer|simulate|pretrain` lists each "
                              "command's keys).")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
