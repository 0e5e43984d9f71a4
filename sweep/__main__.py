import sys

from sweep.cli import main

if __name__ == "__main__":  # trial processes (sweep.worker) may import this module
    sys.exit(main())
