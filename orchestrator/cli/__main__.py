"""`python -m orchestrator.cli`: the tbctl command."""

import sys

from orchestrator.cli.app import main

sys.exit(main())
