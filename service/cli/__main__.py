"""``python -m service.cli``: the ``acklog`` command (the supervisor starts its children so)."""

import sys

from service.cli.launch import main

sys.exit(main())
