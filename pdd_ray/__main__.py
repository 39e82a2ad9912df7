"""``python -m pdd_ray`` == ``pdd-ray``."""

import sys

from pdd_ray.cli import main

sys.exit(main())
