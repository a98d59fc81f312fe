"""Run the stockstream server: `python run.py [--port 5000] [--simulate] ...`."""
import sys

from stockstream.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
