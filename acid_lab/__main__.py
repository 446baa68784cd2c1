"""``python -m acid_lab COMMAND ...`` (the commands are in acid_lab.commands)."""
import sys

from acid_lab.commands import main

if __name__ == "__main__":
    sys.exit(main())
