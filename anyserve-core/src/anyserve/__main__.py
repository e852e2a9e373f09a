"""``python -m anyserve start --app myapp:app``: serve with only anyserve-core installed.

See :mod:`anyserve.serve_command`.
"""

import sys

from anyserve.serve_command import main

if __name__ == "__main__":
    sys.exit(main())
