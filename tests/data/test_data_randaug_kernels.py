"""The RandAugment's Triton kernels compile for a real GPU target. Triton's interpreter (which runs them in the CPU
suite) does not type-check them as the compiler does: a variable that is int32 in one branch and float32 in another
runs in the interpreter and fails to compile. Triton's front end and ptxas run without a GPU, so this compiles both
kernels for sm_90 (H100/H200) in a subprocess without ``TRITON_INTERPRET``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton is not installed")

COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mobilemamba.data import randaug_kernels as rk

def compile_kernel(fn, signature):
    names = list(signature)
    constexprs = {(names.index(k),): v for k, v in signature.items() if not isinstance(v, str)}
    signature = {k: (v if isinstance(v, str) else "constexpr") for k, v in signature.items()}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(enable_fp_fusion=False))
    print(fn.fn.__name__, "compiled", len(kernel.asm["cubin"]) > 0)

compile_kernel(rk._tables, dict(src="*u8", rows="*fp32", luts="*i32", HW="i32", ROW=rk.ROW, BLOCK=rk.TABLES_BLOCK))
compile_kernel(rk._pixels, dict(src="*u8", dst="*u8", rows="*fp32", luts="*i32", H="i32", W="i32", fill_r="fp32",
                                fill_g="fp32", fill_b="fp32", side="fp32", centre="fp32", ROW=rk.ROW,
                                BLOCK=rk.PIXELS_BLOCK))
"""


def test_both_kernels_compile_for_an_sm90_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["_tables compiled True", "_pixels compiled True"]
