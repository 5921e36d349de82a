import sys

from chorus_client.cli import main

sys.exit(main())
