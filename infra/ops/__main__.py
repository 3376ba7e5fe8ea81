import sys

from infra.ops.cli import main

sys.exit(main())
