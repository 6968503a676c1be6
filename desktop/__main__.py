"""``python -m desktop`` runs the pneumofl command."""

import sys

from desktop.cli.main import main

sys.exit(main())
