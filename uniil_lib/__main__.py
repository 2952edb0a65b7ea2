"""`python -m uniil_lib ...`: the command line (:mod:`uniil_lib.cli`)."""

import sys

from .cli import main

sys.exit(main())
