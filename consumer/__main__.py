"""`python -m consumer --resource-group NAME`: what the local backend spawns (same as `jobqueue consumer`)."""

from jobqueue.cli.main import app

if __name__ == "__main__":
    app(["consumer", *__import__("sys").argv[1:]])
