import sys

from subnets.cli import main

sys.exit(main())
