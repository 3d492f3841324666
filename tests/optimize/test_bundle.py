"""The bundle writer: whole or absent, never half; an existing bundle is kept unless asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import optimize.bundle as bundle_module
from optimize.bundle import write_bundle
from runtime.bundle import read_manifest, sha256_of
from runtime.errors import UserError

FIELDS = {
    "input": {"size": 32, "multiple": 4, "channels": 1, "layout": "NHWC", "padding": "same"},
    "output": {"size": 32, "classes": 1},
    "preprocessing": {"channels": 1, "mean": 0.5, "std": 0.2},
    "postprocessing": {"activation": "sigmoid", "threshold": 0.5, "class_names": ["bg", "fg"]},
}


def _onnx(tag: str) -> bytes:
    """A real, if trivial, ONNX model (the writer reads its input shape): Identity on a fixed
    1x32x32x1 input, so no memory measurement runs; `tag` tells versions apart."""
    import onnx
    from onnx import TensorProto, helper

    spec = [1, 32, 32, 1]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["mask"])],
        tag,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, spec)],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, spec)],
    )
    return onnx.helper.make_model(graph).SerializeToString()


def _files(tag: str = "model") -> dict[str, tuple[str, str, bytes]]:
    return {"fp32-onnx": ("model_fp32.onnx", "onnx", _onnx(tag))}


def test_written_bundle_reads_back_with_hashes_of_its_files(tmp_path):
    out = write_bundle(tmp_path / "b", _files(), FIELDS, overwrite=False)
    manifest = read_manifest(out)
    (artifact,) = manifest.artifacts
    assert artifact.precision == "fp32" and artifact.sha256 == sha256_of(out / "model_fp32.onnx")
    assert json.loads((out / "manifest.json").read_text())["format_version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging folder left behind


def test_an_existing_bundle_is_refused_unless_overwrite(tmp_path):
    out = write_bundle(tmp_path / "b", _files("one"), FIELDS, overwrite=False)
    with pytest.raises(UserError, match="already holds a bundle: pass --overwrite"):
        write_bundle(out, _files("two"), FIELDS, overwrite=False)
    write_bundle(out, _files("two"), FIELDS, overwrite=True)
    assert (out / "model_fp32.onnx").read_bytes() == _onnx("two")


def test_a_crash_while_writing_leaves_no_bundle_that_looks_whole(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_module, "artifact_entry", crash)
    with pytest.raises(RuntimeError):
        write_bundle(tmp_path / "b", _files(), FIELDS, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_a_crash_while_overwriting_keeps_the_old_bundle(tmp_path, monkeypatch):
    out = write_bundle(tmp_path / "b", _files("old"), FIELDS, overwrite=False)
    monkeypatch.setattr(
        bundle_module, "artifact_entry", lambda *a, **k: (_ for _ in ()).throw(OSError("gone"))
    )
    with pytest.raises(OSError):
        write_bundle(out, _files("new"), FIELDS, overwrite=True)
    assert (out / "model_fp32.onnx").read_bytes() == _onnx("old")
    assert read_manifest(out).artifacts[0].size == len(_onnx("old"))


def test_a_file_as_output_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        write_bundle(Path(target), _files(), FIELDS, overwrite=True)
