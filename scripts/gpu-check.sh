#!/usr/bin/env bash
# The GPU checks of issue 12, in one command (about 5 minutes on one GPU, 7 at most):
#   scripts/gpu-check.sh            # from the checkout, on a machine with a CUDA GPU
# Needs PyTorch, Triton and NumPy (Numba for the CPU comparisons; onnxruntime and
# onnxscript for the ONNX step, skipped without them); installs nothing: the checkout is
# put on PYTHONPATH. Runs, without Triton's interpreter:
#   1. scripts/gpu_check.py: the Triton kernels against the float64 reference, opcheck,
#      torch.compile(fullgraph=True) with Inductor, torch.export and ONNX on CUDA, and
#      determinism under torch.use_deterministic_algorithms(True);
#   2. the Triton tests of the test suite, where pytest is installed;
#   3. benchmarks/bench_sampler.py --device cuda (the table for the README).
# Exit status: 0 only if every step passed. The output is also written to gpu-check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
PY=${PYTHON:-python3}
status=0
{
  echo "== gpu-check $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  timeout 270 "$PY" scripts/gpu_check.py --device cuda || status=1
  if "$PY" -c "import pytest" 2>/dev/null; then
    args=(tests/ops/test_triton_backend.py)
    "$PY" -c "import hypothesis" 2>/dev/null && args+=(tests/ops/test_contract.py -k triton)
    timeout 90 "$PY" -m pytest -q -p no:cacheprovider "${args[@]}" || status=1
  else
    echo "pytest is not installed: the test-suite step is skipped (step 1 covers it)"
  fi
  timeout 90 "$PY" benchmarks/bench_sampler.py --device cuda --repeats 25 || status=1
  echo "== gpu-check: $([ $status = 0 ] && echo PASSED || echo FAILED)"
  exit $status  # the braces run in a subshell (the pipe): pipefail carries this out
} 2>&1 | tee gpu-check.log
