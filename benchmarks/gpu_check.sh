#!/usr/bin/env bash
# One prepared GPU check, < 10 minutes on one H100/H200 (on an H200: parts 1-2 ~4.5 min, part 3 ~2.5 min, part 5 <= 2):
#   1. the packed-vs-padded equivalence tests on CUDA (varlen flash attention, bf16; Llama, Qwen2, GPT-2 shapes)
#   2. benchmarks/rm_throughput.py --preset gpu --compile (rmexp padded / packed / packed+compile, TRL default and
#      without gradient checkpointing, the dense compiled ceiling; Qwen2-0.5B shape, bf16), one run
#   3. benchmarks/scoring.py --preset gpu --compile (padded vs rmexp's packed scoring at several budgets, eager and
#      compiled, same model shape; the grouped row is the CPU path and takes 1.5 min there: skipped)
#   4. benchmarks/gpu_toy_trial.py cuda (one tiny toy trial with device=cuda, no MLflow: ~35 s on an H200; compare
#      with `benchmarks/gpu_toy_trial.py cpu`: it agreed with the CPU on 2026-11-27)
#   5. the same trial trained as conf/sweep/gpu_real.yaml trains (bf16, train.packing=true, train.compile=true):
#      the varlen + compiled training path end to end (added 2026-12-06, not yet run: a cold triton compile)
# and writes all five to benchmarks/results/<date>-<card>.json. Usage, from anywhere:
#   bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to pick the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
card=$("$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))")
slug=$(echo "$card" | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//')
day=$(date -u +%F)
out="benchmarks/results/${day}-${slug}.json"
tmp=$(mktemp -d)
mkdir -p benchmarks/results
echo "card: $card -> $out"

set +e
timeout 120 "$PY" -m pytest -q -rs tests/test_packing.py -k "cuda" -p no:cacheprovider >"$tmp/equivalence.txt" 2>&1
eq_rc=$?
timeout 330 "$PY" benchmarks/rm_throughput.py --preset gpu --compile --json "$tmp/rm_gpu.json" >"$tmp/rm_gpu.txt" 2>&1
rm_rc=$?
timeout 240 "$PY" benchmarks/scoring.py --preset gpu --skip grouped --compile --packed-budgets 4096,16384 --json "$tmp/scoring_gpu.json" >"$tmp/scoring_gpu.txt" 2>&1
sc_rc=$?
timeout 150 "$PY" benchmarks/gpu_toy_trial.py cuda "$tmp/toy_trial.json" >"$tmp/toy_trial.txt" 2>&1
toy_rc=$?
timeout 120 "$PY" benchmarks/gpu_toy_trial.py cuda "$tmp/toy_compiled.json" model.dtype=bfloat16 train.packing=true \
  train.compile=true cache_dir=/tmp/rmexp_cache_cuda >"$tmp/toy_compiled.txt" 2>&1
comp_rc=$?
set -e
tail -n 5 "$tmp/equivalence.txt"
tail -n 14 "$tmp/rm_gpu.txt"
tail -n 11 "$tmp/scoring_gpu.txt"
tail -n 2 "$tmp/toy_trial.txt"
tail -n 2 "$tmp/toy_compiled.txt"

"$PY" - "$tmp" "$out" "$card" "$eq_rc" "$rm_rc" "$sc_rc" "$toy_rc" "$comp_rc" <<'PYEOF'
import json, pathlib, re, sys
tmp, out, card = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
eq_rc, rm_rc, sc_rc, toy_rc, comp_rc = (int(x) for x in sys.argv[4:9])
eq = (tmp / "equivalence.txt").read_text()
passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", eq)) else 0
skipped = int(m.group(1)) if (m := re.search(r"(\d+) skipped", eq)) else 0
report = {"card": card, "equivalence": {"rc": eq_rc, "passed": passed, "skipped": skipped, "ok": eq_rc == 0 and passed >= 3 and skipped == 0,
                                        "output_tail": eq[-3000:]},
          "rm_throughput": {"rc": rm_rc, "output_tail": (tmp / "rm_gpu.txt").read_text()[-6000:]}}
if (tmp / "rm_gpu.json").exists():
    report["rm_throughput"]["report"] = json.loads((tmp / "rm_gpu.json").read_text())
report["scoring"] = {"rc": sc_rc, "output_tail": (tmp / "scoring_gpu.txt").read_text()[-4000:]}
if (tmp / "scoring_gpu.json").exists():
    report["scoring"]["report"] = json.loads((tmp / "scoring_gpu.json").read_text())
report["toy_trial"] = {"rc": toy_rc, "output_tail": (tmp / "toy_trial.txt").read_text()[-2000:]}
if (tmp / "toy_trial.json").exists():
    report["toy_trial"]["report"] = json.loads((tmp / "toy_trial.json").read_text())
report["toy_trial_compiled"] = {"rc": comp_rc, "output_tail": (tmp / "toy_compiled.txt").read_text()[-2000:]}
if (tmp / "toy_compiled.json").exists():
    report["toy_trial_compiled"]["report"] = json.loads((tmp / "toy_compiled.json").read_text())
pathlib.Path(out).write_text(json.dumps(report, indent=1))
print(f"wrote {out}: equivalence {'OK' if report['equivalence']['ok'] else 'FAILED'} ({passed} passed, {skipped} skipped), "
      f"rm_throughput rc={rm_rc}, scoring rc={sc_rc}, toy trial rc={toy_rc}, compiled toy trial rc={comp_rc}")
sys.exit(0 if report["equivalence"]["ok"] and rm_rc == sc_rc == toy_rc == comp_rc == 0 else 1)
PYEOF
