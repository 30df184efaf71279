"""Peak memory of grokutils.tools.llm on a synthetic multi-GB gpt-oss-format checkpoint.

Builds a sharded checkpoint (bf16 dense tensors, MXFP4 experts with random codes) in a
temporary folder, deleted afterwards, then measures each phase in a fresh Python process:

  baseline  import grokutils.tools.llm, torch and weightwatcher; read and check every header
  read      read and dequantize every selected matrix to float64, one at a time (all experts)
  analyze   WeightWatcher alpha (no traps, no vectors) of block 0, one expert per tensor

and prints its peak resident set size (VmHWM, file-backed pages of the memory-mapped
shards included) next to the largest tensor on disk, the largest matrix as float64, and the
checkpoint size. The claim under test: memory follows the largest matrix, not the model.

Usage: python benchmarks/llm_memory.py [--size-gb 2.5] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Shapes of the synthetic model (per block ~460 MB on disk): gpt-oss-like, smaller hidden size.
HIDDEN = 2048  # hidden size; attention 2048 x 2048, experts 4096 x 2048 and 2048 x 2048
N_EXPERTS = 64  # experts per block; gate_up_proj_blocks (64, 4096, 64, 16) = 268 MB
VOCAB = 32_768  # embeddings 32768 x 2048 (67M entries: listed too_large, never read)
BYTES_PER_BLOCK_ON_DISK = 460e6


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB: VmHWM (ru_maxrss would include the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # not Linux


def run_phase(phase: str, folder: Path) -> dict:
    """Run one measured phase in this process; return its figures."""
    from grokutils.tools import llm

    llm.import_weightwatcher()  # the same imports in every phase
    start = time.perf_counter()
    specs = llm.select_matrices(llm.list_tensors(folder))
    readable = [s for s in specs if llm.size_status(s) == "ok"]
    largest = max(s.rows * s.cols * 8 for s in readable)
    figures = dict(matrices=len(readable), largest_matrix_float64_mb=largest / 1e6)
    if phase == "read":
        for spec in readable:
            matrix = llm.read_matrix(spec)
            del matrix
    elif phase == "analyze":
        table = llm.analyze_checkpoint(folder, include=r"layers\.0\.", max_experts=1, traps=False, progress=False,
                                       vectors=False, detX=False)  # the cheap mode: alpha only
        figures["matrices"] = int((table["status"] == "ok").sum())
    return figures | dict(seconds=time.perf_counter() - start, peak_rss_mb=peak_rss_mb())


def measure(phase: str, folder: Path) -> dict:
    """Run a phase in a fresh interpreter and parse the JSON line it prints."""
    done = subprocess.run([sys.executable, __file__, "--phase", phase, "--checkpoint", str(folder)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def build(folder: Path, size_gb: float) -> tuple[float, float]:
    """Write the checkpoint; return (checkpoint size, largest tensor on disk) in MB."""
    from grokutils.tools import llm, synthetic_llm

    n_blocks = max(1, round(size_gb * 1e9 / BYTES_PER_BLOCK_ON_DISK))
    synthetic_llm.write_synthetic_gpt_oss(folder, n_blocks=n_blocks, n_experts=N_EXPERTS, hidden=HIDDEN,
                                          intermediate=HIDDEN, vocab=VOCAB, encode=False, seed=0)
    entries = llm.list_tensors(folder).values()
    nbytes = {"U8": 1, "BF16": 2}
    largest = max(nbytes[e.dtype] * math.prod(e.shape) for e in entries)
    total = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return total / 1e6, largest / 1e6


def main() -> None:
    """Build, measure the three phases, print the figures, delete the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.5, help="approximate checkpoint size")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary folder goes")
    parser.add_argument("--phase", choices=["baseline", "read", "analyze"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.checkpoint)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="llm-memory-") as tmp:
        start = time.perf_counter()
        checkpoint_mb, largest_tensor_mb = build(Path(tmp), args.size_gb)
        print(f"checkpoint: {checkpoint_mb:,.0f} MB on disk, largest tensor {largest_tensor_mb:,.0f} MB "
              f"(built in {time.perf_counter() - start:.0f} s)")
        results = {phase: measure(phase, Path(tmp)) for phase in ["baseline", "read", "analyze"]}
    base = results["baseline"]["peak_rss_mb"]
    largest_matrix_mb = results["read"]["largest_matrix_float64_mb"]
    print(f"largest matrix read: {largest_matrix_mb:,.0f} MB as float64; ratios below use the peak above baseline")
    print(f"{'phase':9} {'matrices':>8} {'seconds':>8} {'peak RSS MB':>12} {'above base':>11} "
          f"{'/ largest tensor':>17} {'/ largest matrix':>17} {'/ checkpoint':>13}")
    for phase, r in results.items():
        extra = r["peak_rss_mb"] - base
        print(f"{phase:9} {r['matrices']:8d} {r['seconds']:8.1f} {r['peak_rss_mb']:12,.0f} {extra:11,.0f} "
              f"{extra / largest_tensor_mb:17.2f} {extra / largest_matrix_mb:17.2f} {extra / checkpoint_mb:13.3f}")


if __name__ == "__main__":
    main()
