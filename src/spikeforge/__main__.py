import sys

from spikeforge.app.cli import main

sys.exit(main())
