"""``python -m huimages_wsgi.cli``: the ``huimages`` command."""

import sys

from .main import main

sys.exit(main())
