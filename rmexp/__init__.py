"""rmexp: an experiment platform for reward-model research."""
import os as _os

# Quiet the libraries' per-load chatter (weight-loading reports and bars); warnings still show.
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:
    from transformers.utils import logging as _hf_logging

    _hf_logging.set_verbosity_error()
    _hf_logging.disable_progress_bar()
except ImportError:  # pragma: no cover
    pass
