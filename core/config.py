"""Typed stage configs read from params.yaml; unknown keys are rejected with the key named."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from ruamel.yaml import YAML

from core.errors import ConfigError

PARAMS_FILE = "params.yaml"
M = TypeVar("M", bound=BaseModel)


class StageConfig(BaseModel):
    """Base for every stage section: extra keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def params_path() -> Path:
    return Path(os.environ.get("LIFECYCLE_PARAMS", PARAMS_FILE))


def read_params(path: Path | None = None) -> dict:
    path = path or params_path()
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # ruamel raises many types; all mean the same to the user
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def validate_section(model: type[M], section: str, values: object, source: str = PARAMS_FILE) -> M:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{section}' must be a mapping")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join([section, *(str(p) for p in err["loc"])])
            if err["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown key")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_section(section: str, model: type[M], path: Path | None = None) -> M:
    path = path or params_path()
    params = read_params(path)
    if section not in params:
        raise ConfigError(f"{path}: missing section '{section}'")
    values = params[section]
    # a stage may also read whole top-level sections (clean reads `data`), listed in INCLUDE
    included = getattr(model, "INCLUDE", ())
    if included:
        values = dict(values or {})
        for name in included:
            if name in values:
                raise ConfigError(f"{path}: {section}.{name}: set it in the top-level '{name}' section instead")
            if name not in params:
                raise ConfigError(f"{path}: missing section '{name}'")
            values[name] = validate_section(model.model_fields[name].annotation, name, params[name], str(path))
    return validate_section(model, section, values, str(path))


def parse_override(item: str) -> tuple[list[str], object]:
    """'sft.lora.r=8' -> (['sft', 'lora', 'r'], 8); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected section.key=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"override '{item}': key must name a section and a key, e.g. align.method=ppo")
    value = YAML(typ="safe").load(raw) if raw.strip() else ""
    return parts, value


PROFILES_DIR = Path("profiles")


def profile_overrides(name: str) -> list[str]:
    """A profile (profiles/<name>.yaml, or a path) as override strings: its nested keys flattened to dots."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"profile '{name}': {path} not found (profiles: {', '.join(known) or 'none'})")
    doc = read_params(path)
    overrides: list[str] = []

    def walk(node: dict, prefix: list[str]) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, [*prefix, str(key)])
            else:
                dumped = json.dumps(value)  # JSON is YAML: the override parser reads it back unchanged
                overrides.append(f"{'.'.join([*prefix, str(key)])}={dumped}")

    walk(doc, [])
    return overrides


def apply_overrides(path: Path, overrides: list[str]) -> dict[str, object]:
    """Write overrides into params.yaml (comments kept), as `dvc exp run --set-param` does.

    Returns the applied {dotted.key: value}. Keys must already exist: a typo is an error, not a new key.
    """
    if not overrides:
        return {}
    yaml = YAML()  # round-trip: keeps comments and order
    yaml.preserve_quotes = True  # a quoted value stays quoted (e.g. "<|end|>")
    yaml.width = 4096  # never re-wrap a line the override did not touch
    yaml.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own style
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = yaml.load(path.read_text(encoding="utf-8"))
    applied: dict[str, object] = {}
    for item in overrides:
        parts, value = parse_override(item)
        node = doc
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"override '{item}': unknown key '{'.'.join(parts[: i + 1])}' in {path}")
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(f"override '{item}': unknown key '{'.'.join(parts)}' in {path}")
        node[parts[-1]] = value
        applied[".".join(parts)] = value
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh)
    os.replace(tmp, path)
    return applied
