#!/usr/bin/env bash
# The USRNet non-blind SR protocol over all 12 kernels: one `irc eval` per kernel, then a
# markdown table of PSNR / SSIM per kernel and the average (what a model card reports).
#
#   scripts/eval-usrnet-kernels.sh set5 4 -m bicubic -m lorun -w default -w lorun-sr-x4
#   scripts/eval-usrnet-kernels.sh bsd68 4 --limit 10 -m lorun -w lorun-sr-x4
#
# Arguments: DATASET (set5 or bsd68), SCALE (2, 3 or 4), then any `irc eval` options.
# Results: eval-results/usrnet/DATASET-xSCALE/kK/ (rows.csv, summary.json) and table.md there.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
dataset=$1 scale=$2
shift 2
# The repository's environment when there is one (bash scripts/test.sh or demo.sh make it), so the
# script works without an activated venv; else whatever `irc` and `python` are on PATH.
venv="${IRC_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv}"
if [ -x "$venv/bin/irc" ]; then
  PATH="$venv/bin:$PATH"
fi
if ! command -v irc >/dev/null; then
  echo "eval-usrnet-kernels.sh: no 'irc' command: run 'bash scripts/test.sh' once or pip install -e ." >&2
  exit 2
fi
out=${IRC_EVAL_OUT:-eval-results}/usrnet/$dataset-x$scale
for k in $(seq 0 11); do
  echo "kernel $k" >&2
  irc eval --dataset "$dataset" --scale "$scale" --kernel "$k" --output "$out/k$k" --quiet --json "$@" > /dev/null
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = {}  # label -> [(psnr, ssim) per kernel]
for k in range(12):
    for s in json.loads((out / f"k{k}" / "summary.json").read_text()):
        rows.setdefault(s["label"], []).append((s["psnr"], s["ssim"]))
lines = ["| method | " + " | ".join(f"k{k}" for k in range(12)) + " | average PSNR / SSIM |",
         "|---|" + "---|" * 13]
for label, scores in rows.items():
    psnr = sum(p for p, _ in scores) / len(scores)
    ssim = sum(s for _, s in scores) / len(scores)
    lines.append(f"| {label} | " + " | ".join(f"{p:.2f}" for p, _ in scores) + f" | {psnr:.2f} / {ssim:.4f} |")
table = "\n".join(lines)
(out / "table.md").write_text(table + "\n")
print(table)
PY
