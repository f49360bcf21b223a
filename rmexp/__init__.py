"""rmexp: an experiment platform for reward-model research."""
import os as _os
import platform as _platform

# Pinned CPU numerics, set before torch runs a kernel (a value already in the environment is kept). Training is
# chaotic: a last-bit difference in one kernel grows into a seed-sized difference in the metrics, and ATen's kernels
# dispatch on the widest instruction set the CPU has, so the same config and seed gave other metrics on an AVX-512
# machine than on an AVX2 one (docs/reproducibility.md). ATen at AVX2, MKL's BLAS in its reproducible AVX2 mode
# (MKL_CBWR: the same results on any processor with AVX2) and oneDNN capped at AVX2 make a result the same on any
# x86-64 CPU with AVX2. What is in force is part of every cache key and trial key (rmexp.config.numerics).
CPU_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                # torch.compile's C++ kernels (train.compile): inductor's vector code follows ATEN_CPU_CAPABILITY, the
                # rest is built with -march=native unless this names the target (haswell: AVX2 and FMA)
                "TORCHINDUCTOR_CPP_MARCH": "haswell"}
PINS_CPU_NUMERICS = _platform.machine().lower() in ("x86_64", "amd64")  # the pins name x86-64 instruction sets
if PINS_CPU_NUMERICS:
    for _key, _value in CPU_NUMERICS.items():
        _os.environ.setdefault(_key, _value)

# Quiet the libraries' per-load chatter (weight-loading reports and bars); warnings still show.
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:
    from transformers.utils import logging as _hf_logging

    _hf_logging.set_verbosity_error()
    _hf_logging.disable_progress_bar()
except ImportError:  # pragma: no cover
    pass
