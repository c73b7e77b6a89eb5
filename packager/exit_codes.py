"""Exit codes of every `modelsync` command, by class of outcome (docs/cli.md lists them).

One table for the three packages' commands so a script or a supervisor can tell a refused
update from an unreachable server without parsing text. ``device sync`` is the one command
with two successes: nothing new (OK) and something new installed (UPDATED).
"""

from __future__ import annotations

OK = 0
INTERNAL = 1  # a defect of ours: reported with the exception's class, never a traceback
USAGE = 2  # bad arguments or an input file the command cannot use
VERIFICATION = 3  # a signature, hash, trust-policy or golden-vector check refused
NOT_FOUND = 4
CONFLICT = 5  # already exists, or the state forbids the change
UNAUTHORIZED = 6  # missing, wrong or insufficient credentials
UNREACHABLE = 7  # server unreachable, network or transport failure, server error
UPDATED = 10  # device sync installed and activated something new
INTERRUPTED = 130
