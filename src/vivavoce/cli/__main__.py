import sys

from vivavoce.cli import main

sys.exit(main())
