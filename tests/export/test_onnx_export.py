"""Export of the fused model: ONNX with standard operators only, equal to PyTorch in onnxruntime; torch.export."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mobilemamba
from mobilemamba.export import (ExportError, build_export_model, check_onnx, compare_onnx, compare_torch_export,
                                export_onnx, export_torch, nonstandard_ops)
from mobilemamba.export.cli import main, parse_args
from mobilemamba.models.ss2d import SS2D
from tests.models.helpers import TINY, randomize_bn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_fused():
    torch.manual_seed(0)
    model = randomize_bn(mobilemamba.create_model("mobilemamba_t2", num_classes=10, **TINY)).fuse()
    for m in model.modules():
        if isinstance(m, SS2D):
            m.scan_backend = "chunked"
    return model


@pytest.mark.slow
def test_export_py_writes_a_checked_onnx_file_of_t2_equal_to_pytorch_with_a_dynamic_batch(tmp_path):
    """The issue's acceptance: T2 at 192 px, fp32, max relative difference ≤ 1e-4, standard ops only."""
    out = tmp_path / "t2.onnx"
    proc = subprocess.run([sys.executable, "export.py", "model=t2", "format=onnx", f"out={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "random weights" in proc.stderr and "max relative difference" in proc.stdout
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["variant"] == "mobilemamba_t2" and record["img_size"] == 192 and record["opset"] == 18
    assert record["ok"] and record["max_rel_diff"] <= 1e-4
    assert record["compared_batches"] == [1, 3]
    assert record["inputs"] == [dict(name="input", shape=["batch", 3, 192, 192], dtype="float32")]
    proto = onnx.load(str(out))
    assert nonstandard_ops(proto) == []
    assert {"CumSum", "Exp", "MatMul"} <= {n.op_type for n in proto.graph.node}  # the chunked scan, not a loop
    assert not {"Loop", "Scan", "If"} & {n.op_type for n in proto.graph.node}


def test_opset_17_goes_through_the_torchscript_exporter_and_equals_pytorch(tiny_fused, tmp_path):
    """(The dynamo exporter, the default at opset 18, is covered by the T2 test above.)"""
    path = tmp_path / "tiny.onnx"
    assert export_onnx(tiny_fused, path, 64, opset=17) == "torchscript"
    info = check_onnx(path)
    assert info["opset"] == 17
    assert info["inputs"][0]["shape"] == ["batch", 3, 64, 64]
    assert compare_onnx(path, tiny_fused, 64, batches=(1, 3)) < 1e-5


def test_a_fixed_batch_export_has_a_static_input(tiny_fused, tmp_path):
    path = tmp_path / "static.onnx"
    export_onnx(tiny_fused, path, 64, opset=17, dynamic_batch=False, exporter="torchscript")
    assert check_onnx(path)["inputs"][0]["shape"] == [2, 3, 64, 64]


def test_operators_outside_the_standard_domain_are_reported():
    from onnx import TensorProto, helper
    node = helper.make_node("SelectiveScan", ["x"], ["y"], domain="mobilemamba.ops")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    assert nonstandard_ops(helper.make_model(graph)) == ["mobilemamba.ops::SelectiveScan"]


def test_the_dynamo_exporter_refuses_an_opset_below_18(tiny_fused, tmp_path):
    with pytest.raises(ExportError, match="opset ≥ 18"):
        export_onnx(tiny_fused, tmp_path / "x.onnx", 64, opset=17, exporter="dynamo")


def test_torch_export_round_trips_through_a_pt2_file(tiny_fused, tmp_path):
    path = tmp_path / "tiny.pt2"
    export_torch(tiny_fused, path, 64)
    assert compare_torch_export(path, tiny_fused, 64, batches=(1, 3)) < 1e-6


def test_build_export_model_reads_classes_and_fusion_from_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    trained = randomize_bn(mobilemamba.create_model("mobilemamba_t2", num_classes=7, **TINY)).eval()
    raw, fused = tmp_path / "raw.pth", tmp_path / "fused.pth"
    torch.save({"model": trained.state_dict()}, raw)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = trained(x)
        torch.save(mobilemamba.fuse_model_copy(trained).state_dict(), fused)
        for path in (raw, fused):
            model = build_export_model("mobilemamba_t2", path, **TINY)
            assert model.num_classes == 7 and model.fused and not model.training
            assert all(m.scan_backend == "chunked" for m in model.modules() if isinstance(m, SS2D))
            assert torch.allclose(model(x), expected, atol=1e-4)


def test_the_export_resolution_is_the_checkpoints_training_resolution_unless_given(tmp_path):
    """This project's checkpoints record their config: a T2 trained at 32 px exports at 32 px; an explicit img_size
    wins with a one-line warning; a published checkpoint (weights only) keeps the variant's 192."""
    from mobilemamba.export.core import export_img_size

    state = mobilemamba.create_model("mobilemamba_t2", num_classes=10, **TINY).state_dict()
    ours, published = tmp_path / "last.ckpt", tmp_path / "published.pth"
    torch.save({"model": state, "config": {"model": {"name": "mobilemamba_t2", "img_size": 32}}}, ours)
    torch.save(state, published)
    assert export_img_size("mobilemamba_t2", ours, False, None) == (32, "checkpoint", 32)
    assert export_img_size("mobilemamba_t2", published, False, None) == (192, "variant", None)
    assert export_img_size("mobilemamba_t2", None, False, None) == (192, "variant", None)
    with pytest.warns(UserWarning, match=r"^img_size=64 overrides the resolution the checkpoint was trained at \(32\)$"):
        assert export_img_size("mobilemamba_t2", ours, False, 64) == (64, "argument", 32)


def test_command_line_arguments_are_key_value_with_one_line_errors():
    args = parse_args(["model=b1", "checkpoint=/x.pth", "opset=17", "dynamic_batch=false", "img_size=224"])
    assert args["model"] == "mobilemamba_b1" and args["checkpoint"] == "/x.pth"
    assert args["opset"] == 17 and args["dynamic_batch"] is False and args["img_size"] == 224
    assert parse_args(["model=mobilemamba_t2"])["format"] == "onnx"
    for bad, message in [(["model=t9"], "unknown model 't9'"), (["model=t2", "opset=x"], "opset"),
                         (["model=t2", "colour=red"], "unknown key 'colour'"), (["t2"], "key=value"),
                         ([], "model=<variant> is required"), (["model=t2", "dynamic_batch=maybe"], "true or false")]:
        with pytest.raises(ValueError, match=message):
            parse_args(bad)


def test_the_command_line_reports_bad_input_in_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["model=t2", f"checkpoint={tmp_path / 'none.pth'}"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "checkpoint not found" in err
    assert main(["model=t2", "format=tflite"]) == 2
    assert "format must be onnx or torch_export" in capsys.readouterr().err
