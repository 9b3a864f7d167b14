"""Triton gated activation: out = tanh(a) * sigmoid(b), elementwise."""
import triton
import triton.language as tl


@triton.jit
def tanh_(x):
    # libdevice tanh does not run in the interpreter; this identity is exact in real arithmetic.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def gated_activation_kernel(a_ptr, b_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    # Loads are widened to fp32 first: the interpreter's bf16 arithmetic is wrong, and fp32 is what we want anyway.
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, tanh_(a) * tl.sigmoid(b), mask=mask)


def gated_activation(a, b, block: int = 1024):
    """a, b: same shape, fp32/fp16/bf16 -> fp32 tensor tanh(a) * sigmoid(b), cast back to a's dtype."""
    import torch

    a_c, b_c = a.contiguous(), b.contiguous()
    out = torch.empty(a_c.shape, dtype=torch.float32, device=a_c.device)
    n = a_c.numel()
    if n:
        gated_activation_kernel[(triton.cdiv(n, block),)](a_c, b_c, out, n, BLOCK=block)
    return out.to(a.dtype)
