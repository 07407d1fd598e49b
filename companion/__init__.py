"""Companion package of the course *Why do the numbers of a training run disagree?*

Importing it is cheap: TensorFlow and PyTorch are imported lazily, only by the modules that
need them (``companion.tf_loop``, ``companion.torch_loop``, ...).

>>> import companion
>>> companion.seed_everything(0)
"""

from companion.reproducibility import _quiet_frameworks, seed_everything

# Must run before TensorFlow is first imported, wherever that happens: it only sets
# environment variables, so it costs nothing here.
_quiet_frameworks()

__version__ = "2026.1"
__all__ = ["seed_everything", "__version__"]
