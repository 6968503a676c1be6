"""The frozen bundle's one executable: it runs the command it was started as (see ``contents.COMMANDS``).

``pneumofl`` is the app; ``flower-superlink``, ``flwr-clientapp`` and the other names are links to the same file, so
Flower finds its helpers by name on PATH as it does in a virtual environment.
"""

from __future__ import annotations

import importlib
import multiprocessing
import sys
from pathlib import Path

from contents import COMMANDS  # bundled next to this script


def main() -> int:
    """Dispatch on the program's name; ``pneumofl`` for any name it does not know."""
    name = Path(sys.argv[0]).name
    target = COMMANDS.get(name, COMMANDS["pneumofl"])
    module, _, function = target.partition(":")
    result = getattr(importlib.import_module(module), function)()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
