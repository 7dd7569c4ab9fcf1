"""``python -m irc`` (also what ``accelerate launch -m irc ...`` and ``torchrun -m irc`` run)."""

import sys

from irc.cli import main

sys.exit(main())
