"""params.yaml is the one place a user reads every knob and the value in force: every field of every section's
config class is listed there, and where the class's default (the published recipe's value) differs from the
value in force, the line says why, in a comment on it or just above it."""
import importlib
import json
import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
PARAMS_TEXT = (ROOT / "params.yaml").read_text()
PARAMS = YAML().load(PARAMS_TEXT)  # round-trip: keeps each key's line
LINES = PARAMS_TEXT.splitlines()
STAGES = ["clean", "tokenizer", "pretrain", "domain", "sft", "reward", "align", "evaluate", "promote"]


def section_models() -> dict[str, type[BaseModel]]:
    from pipelines.lifecycle import Orchestration
    from pipelines.report import Bounds
    from tasks import TaskConfig

    models = {name: importlib.import_module(f"stages.{name}").Config for name in STAGES}
    models["data"] = models["clean"].model_fields["data"].annotation
    return {**models, "task": TaskConfig, "report": Bounds, "orchestration": Orchestration}


def model_of(annotation) -> type[BaseModel] | None:
    """The config class a field holds (also inside `X | None`), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [model_of(a) for a in typing.get_args(annotation)]
        return next((m for m in found if m), None)
    return None


def commented(node, key: str, lines: list[str]) -> bool:
    """A comment on the key's line or right above it, or one above its run of sibling keys that names it."""
    line = node.lc.key(key)[0]
    if "#" in lines[line] or lines[line - 1].lstrip().startswith("#"):
        return True
    indent = len(lines[line]) - len(lines[line].lstrip())
    for above in reversed(lines[:line]):
        if above.lstrip().startswith("#"):
            if re.search(rf"\b{key}\b", above):
                return True
        elif len(above) - len(above.lstrip()) != indent or above.rstrip().endswith(":"):
            return False  # left the run (a parent key, a nested block's lines)
    return False


def plain(value):
    return json.loads(json.dumps(value.model_dump(mode="json") if isinstance(value, BaseModel) else value))


def walk(model: type[BaseModel], node, path: str, missing: list, silent: list, lines: list[str] = LINES) -> None:
    for name, field in model.model_fields.items():
        if name in getattr(model, "INCLUDE", ()):
            continue  # a top-level section of its own (data, task)
        if name not in node:
            missing.append(f"{path}.{name}")
            continue
        value, sub = node[name], model_of(field.annotation)
        if sub is not None and isinstance(value, dict):
            walk(sub, value, f"{path}.{name}", missing, silent, lines)
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        if default is PydanticUndefined:
            continue  # required: params.yaml is the only place it is set
        if plain(default) != plain(value) and not commented(node, name, lines):
            silent.append(f"{path}.{name}: {plain(value)!r} in params.yaml, {plain(default)!r} in the class")


def test_every_field_is_in_params_and_every_departure_is_explained():
    missing, silent = [], []
    for section, model in section_models().items():
        assert section in PARAMS, f"params.yaml has no '{section}' section"
        walk(model, PARAMS[section], section, missing, silent)
    assert not missing and not silent, (
        "fields missing from params.yaml (add each, with its value in force):\n" + "\n".join(missing)
        + "\nvalues that differ from the class default without a comment saying why:\n" + "\n".join(silent))


def test_the_check_sees_a_missing_field_and_a_silent_departure():
    """The check above can fail: a field dropped from params.yaml, and a value changed without a comment."""
    from stages.evaluate import Config

    text = "evaluate:\n  seed: 0\n  # kl_prompts: why it differs\n  kl_prompts: 8\n  seq_len: 64\n"
    node = YAML().load(text)["evaluate"]
    missing, silent = [], []
    walk(Config, node, "evaluate", missing, silent, text.splitlines())
    assert "evaluate.max_new_tokens" in missing and "evaluate.seed" not in missing
    assert silent == ["evaluate.seq_len: 64 in params.yaml, 128 in the class"]
