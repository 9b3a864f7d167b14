import sys

from speechmax.cli import main

sys.exit(main())
