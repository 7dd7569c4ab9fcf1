"""Does ``--compile`` pay for HYPIR? irc's fast path, eager and then compiled, in one process.

    python scripts/hypir_compile.py --threads 2 --size 512

Runs on the real SD2.1 architecture with random weights (``random:sd21``: no download), bf16,
one image of ``--size`` x ``--size``, ``--latent mode`` (deterministic). Prints one JSON line:
the eager first call and two timed eager calls, the first compiled call (the compilation) and
two timed compiled calls, and how far the compiled output is from the eager one (max and mean
absolute difference, 0-255 units). ``irc bench --compile`` times the same thing per variant but
would also compile the official-settings path; this script keeps the question to irc's path.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from irc.pipeline import restore_tensor
from irc.restore import load_method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--dtype", default="bf16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    method = load_method("hypir", "random:sd21", task=None, device="cpu", dtype=args.dtype, offline=None)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    knobs = dict(prompt="a photo", latent="mode", seed=0)

    def timed() -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        y = restore_tensor(method, x, **knobs)
        return time.perf_counter() - start, y

    report: dict = {"threads": args.threads, "size": args.size, "dtype": args.dtype}
    report["eager_first_s"], _ = timed()
    report["eager_s"] = [timed()[0] for _ in range(2)]
    _, eager = timed()
    method.compile()
    report["compiled_first_s"], compiled = timed()
    report["compiled_s"] = [timed()[0] for _ in range(2)]
    diff = (compiled - eager).abs() * 255
    report["max_abs_diff_255"], report["mean_abs_diff_255"] = float(diff.max()), float(diff.mean())
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
