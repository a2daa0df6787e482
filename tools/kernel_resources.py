"""What our Triton kernels cost a GPU thread, without a GPU: each launch of the chunked scan's
forward and backward, compiled for sm_90 (H100/H200) as Triton would compile it there, with
its registers, spills, shared memory and SASS instruction counts, whole and per loop body (in
the scan's passes, a loop body is one frame's work).

The scan runs on CPU tensors of the given shape with every Triton launch intercepted: instead
of running, each kernel is compiled with the launch's own arguments. Triton specialises them
as it would on the GPU: pointers 16-byte aligned and integers divisible by 16 are marked so
(except the kernel's ``do_not_specialize`` ones), and integers equal to 1 become constants.
Alignment decides the layouts that Triton picks, and so the registers.

    python tools/kernel_resources.py --batch 1 --frames 16000

Needs Triton with its CUDA backend (ptxas and cuobjdump ship in Triton's Linux wheel). The
outputs of an intercepted run are meaningless; only the compiled kernels are reported.
"""

import argparse
import re
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from espnet_mamba.ops import chunked_scan

TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32", torch.int64: "i64"}
LAUNCH_OPTIONS = ("num_warps", "num_stages", "maxnreg")
CUDA_BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def compile_offline(kernel, args: tuple, kwargs: dict, arch: int = 90):
    """Compile ``kernel`` (a ``triton.jit`` function) for sm_``arch`` with the arguments of one
    launch; returns Triton's CompiledKernel (its ``asm`` holds the PTX and the cubin)."""
    names = kernel.arg_names
    values = dict(zip(names, args), **{k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS})
    signature, constexprs, attrs = {}, {}, {}
    for index, name in enumerate(names):
        value = values[name]
        if kernel.params[index].is_constexpr:
            signature[name], constexprs[(index,)] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + TYPES[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{kernel.fn.__name__}: argument {name}={value!r} is not a tensor, an int or a float")
        elif value == 1 and name not in kernel.do_not_specialize:
            signature[name], constexprs[(index,)] = "constexpr", 1
        else:
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0 and name not in kernel.do_not_specialize:
                attrs[(index,)] = [["tt.divisibility", 16]]
    options = {k: v for k, v in kwargs.items() if k in LAUNCH_OPTIONS}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def resources(compiled) -> Dict[str, int]:
    """Registers, stack (spills), shared bytes (static and dynamic) and SASS counts of a
    compiled kernel, from cuobjdump: instructions, local stores/loads (spill traffic), barriers,
    shuffles, special-function (MUFU) instructions, and the instructions of each loop body
    (:func:`loop_sizes`). Counts are of the code, not of its execution: a loop's body counts
    once."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = _cuobjdump("--dump-resource-usage", cubin.name)
        sass = _cuobjdump("--dump-sass", cubin.name)
    fields = dict(re.findall(r"(REG|STACK|SHARED):(\d+)", usage))
    opcodes = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass)
    counted = {name: sum(op.startswith(prefix) for op in opcodes)
               for name, prefix in (("spill stores", "STL"), ("spill loads", "LDL"), ("barriers", "BAR"),
                                    ("shuffles", "SHFL"), ("MUFU", "MUFU"))}  # fmt: skip
    return {"registers": int(fields["REG"]), "stack": int(fields["STACK"]),
            "shared bytes": int(fields["SHARED"]) + compiled.metadata.shared, "instructions": len(opcodes),
            **counted, "loops": "/".join(str(n) for n in loop_sizes(sass)) or "-"}  # fmt: skip


def loop_sizes(sass: str) -> List[int]:
    """Instructions in each loop body of a SASS listing, smallest first: the instructions from a
    backward branch's target to the branch. An inner loop counts again in the loops around it."""
    lines = re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)
    sizes = []
    for address, text in lines:
        target = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < int(address, 16):
            start, end = int(target.group(1), 16), int(address, 16)
            sizes.append(sum(start <= int(a, 16) <= end for a, _ in lines))
    return sorted(sizes)


def _cuobjdump(flag: str, path: str) -> str:
    return subprocess.run([str(CUDA_BIN / "cuobjdump"), flag, path], check=True, capture_output=True, text=True).stdout


@contextmanager
def compiled_instead_of_launched(kernels, found: List[dict], arch: int = 90):
    """Within it, a launch of any of ``kernels`` compiles the kernel offline and appends
    ``{"kernel", "flags" (its constexprs set to True), "num_warps", **resources}`` to ``found``
    instead of running."""

    def intercept(kernel):
        def run(*args, grid, warmup, **kwargs):
            compiled = compile_offline(kernel, args, kwargs, arch)
            flags = [name for name, value in kwargs.items() if value is True]
            found.append({"kernel": kernel.fn.__name__, "flags": ",".join(flags) or "-",
                          "num_warps": kwargs.get("num_warps", 4), **resources(compiled)})  # fmt: skip

        return run

    for kernel in kernels:
        kernel.run = intercept(kernel)  # an instance attribute: kernel[grid](...) calls it
    try:
        yield found
    finally:
        for kernel in kernels:
            del kernel.run


def scan_kernels(batch: int, frames: int, channels: int, states: int, arch: int = 90) -> List[dict]:
    """The chunked scan's launches of one forward and backward at this shape, bf16: their
    resources, in launch order."""
    kernels = [chunked_scan._scan_chunks, chunked_scan._chain_chunks, chunked_scan._adjoint_chunks,
               chunked_scan._grad_chunks]  # fmt: skip
    u, delta, z = (torch.zeros(batch, frames, channels, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    x_dbl = torch.zeros(batch, frames, 2 * states, dtype=torch.bfloat16, requires_grad=True)
    A = -torch.ones(channels, states, requires_grad=True)
    D, bias = torch.ones(channels, requires_grad=True), torch.zeros(channels, requires_grad=True)
    B, C = x_dbl.split([states, states], -1)  # views of one tensor, as the mixer passes them
    with compiled_instead_of_launched(kernels, [], arch) as found:
        out, _ = chunked_scan.chunked_selective_scan(u, delta, A, B, C, D, z, bias)
        out.backward(torch.zeros_like(out))
    return found


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=16000, help="frames per sequence (mamba_base at 320 s: 16000)")
    p.add_argument("--channels", type=int, default=2304)
    p.add_argument("--states", type=int, default=24)
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100/H200) or 80 (A100)")
    args = p.parse_args(argv)
    rows = scan_kernels(args.batch, args.frames, args.channels, args.states, args.arch)
    print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(value) for value in row.values()) + " |")


if __name__ == "__main__":
    main()
