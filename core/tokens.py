"""Tokenized corpora as memory-mapped token files, cut into blocks and drawn in a deterministic shuffle.

`data/tokens/<corpus>.<split>.bin` holds every document's token ids followed by the document separator
(uint16 when the vocabulary fits, else uint32); `<corpus>.<split>.docs.npy` holds where each document starts.
Training reads blocks of `seq_len` tokens straight from the memory map, so a corpus never has to fit in RAM.
The sampler is a pure function of the step: epoch e visits every block once in a permutation seeded by
(seed, e), so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import json
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from core.errors import InputError

TOKENS = Path("data/tokens")


def _dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2 ** 16 else np.dtype(np.uint32)


_WORKER_TOKENIZER = None


def _init_worker(tokenizer_dir: str) -> None:
    global _WORKER_TOKENIZER
    from transformers import AutoTokenizer

    _WORKER_TOKENIZER = AutoTokenizer.from_pretrained(tokenizer_dir)


def _encode(texts: list[str]) -> list[list[int]]:
    return _WORKER_TOKENIZER(texts, add_special_tokens=False)["input_ids"]


POOL_MIN_CHARS = 8_000_000  # a worker takes ~2 s to start (it imports transformers); one process encodes ~1.5 MB/s


def encode_parallel(tokenizer_dir: str, texts: list[str], workers: int, chunk: int = 2000,
                    pool_min_chars: int = POOL_MIN_CHARS):
    """Token ids of each text, tokenized by `workers` processes (in order); in this process when the texts are
    too few to pay for starting the workers (the demo's 1.6 MB: 1.3 s here, 5 s through a pool)."""
    chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    if workers <= 1 or len(chunks) <= 1 or sum(map(len, texts)) < pool_min_chars:
        _init_worker(tokenizer_dir)
        for c in chunks:
            yield from _encode(c)
        return
    # forkserver, not fork: the stage has threads by now (the BPE trainer's, MLflow's, tqdm's), and a forked
    # child can inherit a lock one of them held and hang (seen once in a demo run)
    with get_context("forkserver").Pool(workers, initializer=_init_worker, initargs=(tokenizer_dir,)) as pool:
        for ids in pool.imap(_encode, chunks):
            yield from ids


def write_tokens(out: Path, name: str, ids_per_doc, separator: int, vocab_size: int) -> dict:
    """Write one token file and its document index; returns {docs, tokens}."""
    dtype = _dtype(vocab_size)
    starts, n = [], 0
    with open(out / f"{name}.bin", "wb") as f:
        for ids in ids_per_doc:
            starts.append(n)
            arr = np.asarray(list(ids) + [separator], dtype=dtype)
            f.write(arr.tobytes())
            n += len(arr)
    np.save(out / f"{name}.docs.npy", np.asarray(starts, dtype=np.int64))
    return {"docs": len(starts), "tokens": n}


def write_meta(out: Path, meta: dict) -> None:
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


class Blocks:
    """Non-overlapping `seq_len` blocks of one token file (the remainder after the last block is unused)."""

    def __init__(self, directory: Path, name: str, seq_len: int):
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            raise InputError(f"{directory}: no token files (meta.json missing); run the tokenizer stage first")
        meta = json.loads(meta_path.read_text())
        path = directory / f"{name}.bin"
        self.tokens = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
        self.seq_len = seq_len
        self.n = len(self.tokens) // seq_len
        if self.n == 0:
            raise InputError(f"{path}: {len(self.tokens)} tokens, fewer than one block of seq_len={seq_len}. The "
                             "tokenizer stage wrote it from the clean stage's held-out or training split of the "
                             "corpus named in the file name (params.yaml data.<corpus>): bring more text, raise "
                             "clean.heldout_min_docs, or see metrics/clean.json for what cleaning dropped")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> torch.Tensor:
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        rows = np.stack([self.tokens[i * self.seq_len:(i + 1) * self.seq_len] for i in idx])
        return torch.from_numpy(rows.astype(np.int64))

    def head(self, limit: int) -> torch.Tensor:
        """The first `limit` blocks as one tensor (validation sets)."""
        return self[np.arange(min(limit, self.n))]


class Sampler:
    """Block indices for a step: each epoch is a seeded permutation; nothing to save for an exact resume."""

    def __init__(self, n_blocks: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n_blocks, batch_size, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._perm[1]

    def indices(self, step: int) -> np.ndarray:
        out = np.empty(self.batch_size, dtype=np.int64)
        for k in range(self.batch_size):
            epoch, offset = divmod(step * self.batch_size + k, self.n)
            out[k] = self._permutation(epoch)[offset]
        return out


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))
