"""onnxruntime check of the ONNX QDQ export.

For every case `NAME.json` in the folder given as the first argument (written by
`cargo test --release --test export onnx`): checks the model with
`onnx.checker.check_model(full_check=True)`, runs it with onnxruntime with graph optimizations
disabled and with the defaults, and asserts that the predictions agree with the crate's
fake-quantized float evaluation on at least 99.9 % of the images. Exits non-zero on any
failure, including a folder without cases.
"""

import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

MIN_AGREEMENT = 0.999


def run(path: pathlib.Path, images: np.ndarray, level) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(["logits"], {"input": images})
    assert logits.shape == (images.shape[0], logits.shape[1]), logits.shape
    return logits.argmax(axis=1)


def check_case(case_path: pathlib.Path) -> None:
    case = json.loads(case_path.read_text())
    folder = case_path.parent
    model_path = folder / case["model"]
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 21, opsets
    shape = case["shape"]
    images = np.fromfile(folder / case["images"], dtype="<f4").reshape(shape)
    expected = np.asarray(case["fake_quant_predictions"])
    n = images.shape[0]
    assert expected.shape == (n,), (expected.shape, n)
    for label, level in [
        ("optimizations disabled", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
        ("default optimizations", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    ]:
        predicted = run(model_path, images, level)
        agree = int((predicted == expected).sum())
        print(
            f"{case['model']}: onnxruntime ({label}) agrees with the fake-quant "
            f"evaluation on {agree}/{n} images"
        )
        assert agree >= MIN_AGREEMENT * n, f"{agree}/{n} below {MIN_AGREEMENT:.1%}"


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: test_onnx.py FOLDER", file=sys.stderr)
        return 2
    cases = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
    if not cases:
        print(f"no ONNX check cases in {sys.argv[1]}", file=sys.stderr)
        return 1
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    failed = 0
    for case in cases:
        try:
            check_case(case)
        except Exception as e:  # noqa: BLE001 - report every case, then fail
            print(f"{case.name}: FAILED: {e!r}", file=sys.stderr)
            failed += 1
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
