"""What every subcommand module shares: the handler type and the key passphrase argument.

Apart from packager.cli so that the subcommand modules it registers never import it back.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from packager.errors import UsageError

Handler = Callable[[argparse.Namespace], int]


def passphrase_from(args: argparse.Namespace) -> bytes | None:
    var = getattr(args, "passphrase_env", None) or "MODELSYNC_KEY_PASSPHRASE"
    value = os.environ.get(var)
    if getattr(args, "passphrase_env", None) and value is None:
        raise UsageError(f"environment variable {var} is not set")
    return value.encode() if value else None
