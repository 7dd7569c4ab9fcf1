"""Network pieces shared by two or more methods or by the training loop.

Submodules are imported explicitly (``from irc.nn.ema import EMA``) so that importing this package
stays cheap:

* :mod:`irc.nn.ema`: exponential moving average of a module's weights, with ``state_dict`` for
  checkpoints and a context manager that swaps the averaged weights in (validation, export).
* :mod:`irc.nn.lora`: stage-indexed LoRA layers (one frozen base, one low-rank adapter per
  unfolding stage).
"""
