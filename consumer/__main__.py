"""`python -m consumer --resource-group NAME [--max-jobs N]`: the consumer process both backends start.

It calls the consumer's entry (`consumer.worker.run_consumer`) directly, as `jobqueue consumer` does.
"""

from typing import Annotated

import typer

from consumer.worker import run_consumer


def main(
    resource_group: Annotated[str, typer.Option("--resource-group", "-g", help="Resource group to serve.")] = "default",
    max_jobs: Annotated[int, typer.Option(min=1, help="Queries run at once (the group's jobs_per_consumer).")] = 1,
) -> None:
    """Run a consumer (arq worker) for one resource group until SIGTERM, then drain."""
    run_consumer(resource_group, max_jobs)


if __name__ == "__main__":
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(main)
    app()
