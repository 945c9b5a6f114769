"""Peak memory and time of one DiT block of the global refiner (default B: width 768, 12 heads)
at 512 / 4,096 / 32,768 tokens (64³ / 128³ / 256³ volumes), with ``scaled_dot_product_attention``
(what the model uses) versus explicit attention that materialises softmax(QKᵀ/√d)·V.

Before a configuration runs, its memory is estimated; when the estimate exceeds the memory
available (free RAM on CPU, free GPU memory on CUDA) it is reported as skipped instead of run.
An out-of-memory error (or the process being killed) is reported too.

    python benchmarks/attention_scaling.py
    python benchmarks/attention_scaling.py --tokens 512,4096 --backward
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import (GiB, ConfigurationFailed, PeakMemory, add_common_args, available_memory, fmt_bytes,
                               fmt_number, memory_note, parse_int_list, precision_note, prime_libraries, report,
                               resolve_device, run_configuration, set_threads, time_runs)
from prdit.models.global_refiner import Attention, DiTBlock

NAME = "attention_scaling"
IMPLEMENTATIONS = ("sdpa", "explicit")
FIT_FRACTION = 0.9  # run only what is estimated to fit in this share of the available memory


class ExplicitAttention(Attention):
    """The same attention with the N×N weight matrix formed in memory (as a plain implementation does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``."""
        b, n, d = x.shape
        head_dim = d // self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        kernel_dtype = torch.bfloat16 if x.device.type in self.bf16_devices else q.dtype
        q, k, v = q.to(kernel_dtype), k.to(kernel_dtype), v.to(kernel_dtype)
        weights = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (weights @ v).to(x.dtype).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


def build_block(width: int, heads: int, implementation: str, device: torch.device) -> DiTBlock:
    """A DiT block with the chosen attention (same weights either way)."""
    block = DiTBlock(width, heads)
    if implementation == "explicit":
        explicit = ExplicitAttention(width, heads)
        explicit.load_state_dict(block.attn.state_dict())
        block.attn = explicit
    return block.to(device)


def estimate_bytes(tokens: int, width: int, heads: int, batch: int, implementation: str, backward: bool) -> int:
    """Rough peak: weights (+ gradients), token activations, and for explicit attention the N×N
    fp32 matrices that coexist (scores and softmax in the forward; two more in the backward)."""
    block_params = 12 * width * width + 13 * width  # qkv, proj, MLP, adaLN: ≈ 12·D² weights
    weights = block_params * 4 * (2 if backward else 1)
    activations = batch * tokens * width * 4 * (40 if backward else 12)
    matrices = 0
    if implementation == "explicit":
        matrices = (4 if backward else 2) * batch * heads * tokens**2 * 4
    return weights + activations + matrices


def measure_block(width: int, heads: int, tokens: int, batch: int, implementation: str, backward: bool,
                  device_name: str, warmup: int, repeats: int, budget_s: float) -> dict:
    """Peak memory and time of one block's forward (and backward) at ``tokens`` tokens."""
    device = resolve_device(device_name)
    prime_libraries(device)
    torch.manual_seed(0)
    with PeakMemory(device) as memory:
        block = build_block(width, heads, implementation, device).train(backward)
        x = torch.randn(batch, tokens, width, device=device, requires_grad=backward)
        c = torch.randn(batch, width, device=device)

        def run() -> None:
            if backward:
                block(x, c).sum().backward()
                x.grad = None
                block.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    block(x, c)

        timing = time_runs(run, device, warmup, repeats, budget_s)
    return {"peak_bytes": memory.peak, "memory_method": memory.method, **timing.to_dict()}


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, estimate, run what fits, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--tokens", default="512,4096,32768", help="tokens per volume, comma-separated")
    parser.add_argument("--width", type=int, default=768, help="block width D (B: 768)")
    parser.add_argument("--heads", type=int, default=12, help="attention heads (B: 12)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--backward", action="store_true", help="forward + backward (training) instead of no-grad forward")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS), help="sdpa, explicit or both")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    width, heads = (64, 4) if args.smoke else (args.width, args.heads)
    token_counts = [64] if args.smoke else parse_int_list(args.tokens)
    implementations = [i for i in args.implementations.split(",") if i]
    if set(implementations) - set(IMPLEMENTATIONS):
        raise SystemExit(f"--implementations: choose among {', '.join(IMPLEMENTATIONS)}")

    results, rows = [], []
    for tokens in token_counts:
        for implementation in implementations:
            estimate = estimate_bytes(tokens, width, heads, args.batch, implementation, args.backward)
            available = available_memory(device)
            entry = {"tokens": tokens, "attention": implementation, "estimated_bytes": estimate,
                     "available_bytes": available}
            row = [f"{tokens:,}", implementation, f"{estimate / GiB:.2f}"]
            if estimate > FIT_FRACTION * available:
                status = (f"estimated {estimate / GiB:.1f} GiB, skipped (would not fit: "
                          f"{available / GiB:.1f} GiB available)")
                results.append({**entry, "status": "skipped"})
                rows.append(row + ["-", "-", status])
                continue
            print(f"block: {tokens} tokens, {implementation} …", file=sys.stderr, flush=True)
            try:
                r = run_configuration(device, measure_block, width, heads, tokens, args.batch, implementation,
                                      args.backward, device.type, args.warmup, args.repeats, args.time_budget,
                                      same_process=args.same_process)
            except ConfigurationFailed as error:
                status = "out of memory" if error.out_of_memory else "failed: " + str(error).splitlines()[0]
                results.append({**entry, "status": status, "error": str(error)})
                rows.append(row + ["-", "-", status])
                continue
            results.append({**entry, "status": "ok", **r})
            rows.append(row + [fmt_bytes(r["peak_bytes"]), fmt_number(r["median_s"]), "ok"])
    mode = "forward + backward" if args.backward else "no-grad forward"
    notes = [f"one DiT block, width {width}, {heads} heads, batch {args.batch}, {mode}, {precision_note(device)}",
             f"N×N fp32 matrix for batch·heads: {heads}·N²·4 bytes per copy "
             f"({heads * 32768**2 * 4 / GiB:.0f} GiB at 32,768 tokens); the estimate counts "
             f"{4 if args.backward else 2} copies for explicit attention, plus weights and token activations",
             memory_note(device, args.same_process) + "; the peak includes the block's weights"]
    report(NAME, device, args, f"Attention scaling: one DiT block, SDPA vs explicit ({device.type})", notes,
           ["tokens", "attention", "estimate GiB", "peak MiB", "time s", "status"], rows, results)


if __name__ == "__main__":
    main()
