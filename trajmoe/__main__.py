import sys

from trajmoe.cli import main

sys.exit(main())
