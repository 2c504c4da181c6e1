"""`lifecycle fetch`: a Hugging Face hub dataset as a local snapshot that DVC can track.

DVC cannot hash an `hf://` dependency (it stops with "Unsupported URL type hf://"), and a run that reads the hub
while it runs is not reproducible: the dataset may change under the same name. So an input names a local saved
dataset, and this command makes one (online only): data/hub/<owner>__<name>[__<subset>]__<split>/.
"""
from __future__ import annotations

import re
from pathlib import Path

from core.errors import ConfigError
from core.formats import load_hf_dataset
from core.io import atomic_dir

HUB_DIR = Path("data/hub")


def snapshot_dir(name: str, subset: str | None, split: str) -> Path:
    parts = [name.removeprefix("hf://").replace("/", "__"), *([subset] if subset else []), split]
    return HUB_DIR / re.sub(r"[^\w.-]", "_", "__".join(parts))


def fetch(name: str, subset: str | None = None, split: str = "train") -> Path:
    """Download one split and save it under data/hub (atomically); returns the folder."""
    ds = load_hf_dataset(f"hf://{name.removeprefix('hf://')}", subset, split)
    out = snapshot_dir(name, subset, split)
    with atomic_dir(out) as tmp:
        ds.save_to_disk(str(tmp))
    return out


def refuse_hub_inputs(data: dict) -> None:
    """A params `data` input on the hub stops the run, with the commands that snapshot it."""
    for key, spec in data.items():
        path = spec.get("path", "") if isinstance(spec, dict) else str(spec)
        if path.startswith("hf://"):
            subset = spec.get("subset") if isinstance(spec, dict) else None
            split = spec.get("split", "train") if isinstance(spec, dict) else "train"
            local = snapshot_dir(path, subset, split)
            raise ConfigError(
                f"params.yaml: data.{key}.path: {path} is on the hub, which DVC cannot track and which may change "
                f"under the same name. Snapshot it once (online), then point the input at the copy:\n"
                f"  lifecycle fetch {path.removeprefix('hf://')}{f' --subset {subset}' if subset else ''} "
                f"--split {split}\n  lifecycle run --set data.{key}.path={local}")
