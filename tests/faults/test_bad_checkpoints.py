"""Must hold 6, bad checkpoints: a truncated file, another variant's run, another number of classes, weights of
another shape, a pickle that would run code → refused with one clear line each (exit 2), before any training,
and nothing from the file is executed (weights_only=True)."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

import fault_helpers as H


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): proof that code ran, if it ever does."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _truncated(src: dict, path: Path, ref: Path) -> None:
    data = (ref / "last.ckpt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_variant(src: dict, path: Path, ref: Path) -> None:
    ck = copy.deepcopy(src)
    ck["config"]["model"]["name"] = "mobilemamba_s6"
    torch.save(ck, path)


def _other_num_classes(src: dict, path: Path, ref: Path) -> None:
    ck = copy.deepcopy(src)
    ck["config"]["data"]["num_classes"] = 10
    for key in [k for k in ck["model"] if k.startswith("head")]:
        ck["model"][key] = torch.zeros((10,) + tuple(ck["model"][key].shape[1:]))
    torch.save(ck, path)


def _other_shapes(src: dict, path: Path, ref: Path) -> None:
    ck = copy.deepcopy(src)
    name = next(k for k, v in ck["model"].items() if v.ndim == 4)
    ck["model"][name] = torch.zeros(ck["model"][name].shape[0] + 1, *ck["model"][name].shape[1:])
    torch.save(ck, path)


def _runs_code(src: dict, path: Path, ref: Path) -> None:
    ck = copy.deepcopy(src)
    ck["model"] = _RunsCode(str(path.parent / "code-ran"))
    torch.save(ck, path)


def _not_a_training_checkpoint(src: dict, path: Path, ref: Path) -> None:
    torch.save(src["model"], path)  # a bare state dict (e.g. a published weights file)


CASES = [
    ("truncated file", _truncated, "cannot read checkpoint"),
    ("another variant", _other_variant, "model.name"),
    ("another number of classes", _other_num_classes, "data.num_classes"),
    ("weights of another shape", _other_shapes, "does not fit this model"),
    ("pickle that would run code", _runs_code, "refused checkpoint"),
    ("not a training checkpoint", _not_a_training_checkpoint, "not a training checkpoint"),
]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, make, words", CASES, ids=[c[0] for c in CASES])
def test_a_bad_checkpoint_is_refused_in_one_line(name, make, words, cache_dir, reference_single, tmp_path, capsys, table):
    with table.trial(f"bad checkpoint: {name}") as row:
        bad = tmp_path / "bad.ckpt"
        make(H.load(reference_single / "last.ckpt"), bad, reference_single)
        run_dir = tmp_path / "run"
        assert H.run_inproc(cache_dir, run_dir, f"resume={bad}") == 2
        errors = H.error_lines(capsys.readouterr().err)
        assert len(errors) == 1 and words in errors[0], errors
        assert len(errors[0]) < 600, "one readable line"
        assert not (tmp_path / "code-ran").exists(), "nothing from the checkpoint was executed"
        assert not (run_dir / "last.ckpt").exists(), "refused before any training"
        row["redone"] = 0

