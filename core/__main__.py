"""`python -m core ...`: the command line (core.cli.main). Ctrl-C before a command has its own handling (while
torch and the store load) exits 130 with one line, not a traceback."""

import sys

try:
    from core.cli.main import main

    sys.exit(main())
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    sys.exit(130)
