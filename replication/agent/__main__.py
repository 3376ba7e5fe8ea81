"""``python -m replication.agent``: the Lambda handler invoked back to back (``replication.agent.entry.main``)."""

import sys

from replication.agent.entry import main

if __name__ == "__main__":
    sys.exit(main())
