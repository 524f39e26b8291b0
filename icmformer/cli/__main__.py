import sys

from icmformer.cli import main

sys.exit(main())
