"""tools/kernel_resources.py: the chunked scan's Triton kernels compiled for sm_90 on a machine
without a GPU, each with the arguments of its launch, and their resources read back."""

import pytest
import torch

from espnet_mamba.ops import chunked_scan
from espnet_mamba.ops.backend import triton_available

from recipe_helpers import REPO, load_script

pytestmark = pytest.mark.skipif(not triton_available(), reason="Triton is not installed on this platform")


@pytest.fixture(scope="module")
def tool():
    return load_script(REPO / "tools/kernel_resources.py")


def test_every_launch_of_a_training_step_is_compiled_for_sm90(tool):
    rows = tool.scan_kernels(batch=2, frames=300, channels=64, states=24)
    assert [(r["kernel"], r["flags"]) for r in rows] == [
        ("_scan_chunks", "PAIRS"), ("_chain_chunks", "-"), ("_scan_chunks", "WRITE_OUTPUT,PAIRS"),  # passes 1-3
        ("_adjoint_chunks", "PAIRS"), ("_chain_chunks", "REVERSE"), ("_grad_chunks", "-"),  # backward: steps 4-6
    ]  # fmt: skip
    for row in rows:
        assert 0 < row["registers"] <= 255 and row["instructions"] > 100, row
        assert row["MUFU"] > 0, row  # every kernel takes exponentials (exp2)
        loops = [int(n) for n in row["loops"].split("/")]  # each kernel walks frames or chunks in a loop
        assert 0 < min(loops) and max(loops) < row["instructions"], row
    assert {r["kernel"]: r["num_warps"] for r in rows}["_grad_chunks"] == 1
    # the launches ran nothing, and the kernels launch again as before
    assert all("run" not in k.__dict__ for k in (chunked_scan._scan_chunks, chunked_scan._grad_chunks))


def test_alignment_of_the_launch_arguments_reaches_the_compiler(tool):
    """B and C 16-byte aligned are compiled as such and read as pairs of states; one element
    off they are not: a frame's states are then loaded one by one, and the instructions differ."""
    channels, states = 64, 24
    rows = {}
    for offset in (0, 1):
        u = torch.zeros(1, 128, channels, dtype=torch.bfloat16)
        x_dbl = torch.zeros(1, 128 * 2 * states + offset, dtype=torch.bfloat16)[:, offset:].view(1, 128, 2 * states)
        A, D, bias = -torch.ones(states, channels), torch.ones(channels), torch.zeros(channels)
        found = []
        with tool.compiled_instead_of_launched([chunked_scan._scan_chunks, chunked_scan._chain_chunks], found):
            chunked_scan._scan_forward(u, u, A, D, bias, x_dbl[..., :states], x_dbl[..., states:], u, None, 64, 32, 1)
        rows[offset] = found[-1]
    assert (rows[0]["flags"], rows[1]["flags"]) == ("WRITE_OUTPUT,PAIRS", "WRITE_OUTPUT")
    assert rows[0]["instructions"] != rows[1]["instructions"]


def test_loop_sizes_count_from_a_backward_branch_target_to_the_branch(tool):
    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   FADD R2, R2, R3 ;
        /*0020*/                   FMUL R2, R2, R2 ;
        /*0030*/               @P0 BRA 0x10 ;
        /*0040*/               @P1 BRA 0x0 ;
        /*0050*/                   BRA 0x60 ;
        /*0060*/                   EXIT ;
    """
    assert tool.loop_sizes(sass) == [3, 5]  # the inner loop and the outer one; a forward branch is no loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_frame_step_kernels_compile_for_sm90_without_spills(tool, dtype):
    """The streaming step's two kernels, at mamba_base's shapes (E 2304, N 24, K 4), with u a
    strided view of in_proj's output and B, C views of x_proj's, as the mixer launches them."""
    from espnet_mamba.ops import single_step

    batch, E, N = 2, 2304, 24
    xz = torch.zeros(batch, 2 * E, dtype=dtype)
    u, z = xz.chunk(2, dim=1)
    x_dbl = torch.zeros(batch, 48 + 2 * N, dtype=dtype)
    with tool.compiled_instead_of_launched([single_step._conv_step, single_step._state_step], []) as found:
        single_step.depthwise_conv1d_step(u, torch.zeros(batch, E, 3, dtype=dtype), torch.ones(E, 4), torch.ones(E))
        single_step.selective_state_step(torch.zeros(batch, E, N), u, torch.zeros(batch, E, dtype=dtype),
                                         -torch.ones(E, N), x_dbl[:, 48 : 48 + N], x_dbl[:, 48 + N :],
                                         torch.ones(E), z, torch.zeros(E))  # fmt: skip
    assert [(row["kernel"], row["flags"]) for row in found] == [
        ("_conv_step", "HAS_BIAS,SILU"), ("_state_step", "HAS_D,HAS_Z,HAS_BIAS")]
    for row in found:
        assert 0 < row["registers"] <= 255 and row["stack"] == 0 and row["spill stores"] == 0, row
        assert row["MUFU"] > 0, row  # exponentials, sigmoids
