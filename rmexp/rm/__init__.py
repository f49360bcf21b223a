"""Reward-model kinds. Today's Bradley-Terry classifier lives in `rmexp.rm.classifier`; its names are
re-exported here so `from rmexp.rm import ...` keeps working."""
from rmexp.rm.classifier import *  # noqa: F401,F403
from rmexp.rm.classifier import RM_VERSION, _orient_by_gold  # noqa: F401  (names `import *` skips)
