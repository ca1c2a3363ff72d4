"""`python -m sdft.cli ...`: the same as the `sdft` console script."""

import sys

from sdft.cli import main

sys.exit(main())
