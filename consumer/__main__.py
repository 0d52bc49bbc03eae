"""`python -m consumer --resource-group NAME`: what the local backend spawns (same as `jobqueue consumer`)."""

import sys

from jobqueue.cli.main import app

if __name__ == "__main__":
    app(["consumer", *sys.argv[1:]])
