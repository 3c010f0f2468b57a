"""`python -m orchestrator.cli`: the tbctl command."""

import sys

from orchestrator.cli.commands import main

sys.exit(main())
