"""Make a second model of the default one's dimension: its int8 quantization.

    .venv/bin/python hack/make-int8-model.py OUT_DIR

OUT_DIR becomes a model dir for ``--model-dir`` / ``IMPORTER_MODEL_DIR`` (with the default
``--model``): the default model's tokenizer files and an ``model.onnx`` quantized to int8 by ONNX
Runtime's own tool (``quantize_dynamic``). Same name, same 384 dimensions, other vectors: the
case a build identity must tell apart (its model hash differs). No model hub is involved: the
input is the offline default model from the installed packages. Idempotent: an existing
complete OUT_DIR is left as it is. Prints OUT_DIR.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from importer.model import assemble_default_model_dir


def make_int8_model(out: Path) -> Path:
    if (out / "model.onnx").exists() and (out / "tokenizer_config.json").exists():
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = assemble_default_model_dir(Path(tempfile.gettempdir()) / "embedding-importer")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".int8-", dir=out.parent))
    for f in src.iterdir():
        if f.name != "model.onnx":
            shutil.copy(f.resolve(), tmp / f.name)
    quantize_dynamic(src / "model.onnx", tmp / "model.onnx", weight_type=QuantType.QInt8)
    tmp.chmod(0o755)
    for f in tmp.iterdir():
        f.chmod(0o644)
    tmp.rename(out)
    return out


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(make_int8_model(Path(sys.argv[1]).resolve()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
