"""The language-model loss on the CPU: the output layer and cross-entropy fused, chunk by chunk of rows.

With GPT-2's 50,257-token vocabulary the logits are the largest tensor of a training step: (B*T, 50257) floats,
written by the output matmul, read and written again by log-softmax, its backward and the zero-filled gradient of
the loss. On a CPU those passes over memory cost about as much as the matrix multiplies around them. Here each
chunk of rows goes through matmul, log-sum-exp, softmax gradient and the two gradient matmuls while its logits are
still in cache, and the gradients are kept for the backward pass, which only scales them. The loss is the same
mean cross-entropy (to fp32 rounding); ``python -m nanogpt_lib.bench`` measures the effect.
"""

from __future__ import annotations

import math

import torch

CHUNK_ROWS = 128  # rows of logits per chunk: the fastest of 32..512 measured on a 2-core x86 CPU


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, need_grad: bool):  # x (N, C), weight (V, C), targets (N,)
        n_rows = x.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if need_grad else None
        grad_w = torch.zeros_like(weight) if need_grad else None
        for start in range(0, n_rows, CHUNK_ROWS):
            xc, tc = x[start : start + CHUNK_ROWS], targets[start : start + CHUNK_ROWS, None]
            logits = xc @ weight.t()  # (n, V)
            lse = torch.logsumexp(logits, dim=1, keepdim=True)  # (n, 1)
            total += (lse - logits.gather(1, tc)).sum()
            if need_grad:
                # d(mean loss)/d logits = (softmax - one_hot) / N, built in place in the logits buffer
                logits.sub_(lse + math.log(n_rows)).exp_()
                logits.scatter_add_(1, tc, logits.new_full(tc.shape, -1.0 / n_rows))
                torch.mm(logits, weight, out=grad_x[start : start + CHUNK_ROWS])  # (n, C)
                grad_w.addmm_(logits.t(), xc)  # (V, C)
        ctx.save_for_backward(grad_x, grad_w)
        return total / n_rows

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss, grad_w * grad_loss, None, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits ``x @ weight.T`` (N, V) against ``targets`` (N,), never materialising them."""
    need_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(x, weight, targets, need_grad)
