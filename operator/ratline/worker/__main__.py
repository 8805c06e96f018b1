"""`python -m ratline.worker`."""

import sys

from ratline.worker.main import main

sys.exit(main())
