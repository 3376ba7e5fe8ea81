import sys

from policies.pricing.refresh import main

sys.exit(main())
