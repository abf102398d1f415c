"""`python -m orca_ray.parity`."""

import sys

from .cli import main

sys.exit(main())
