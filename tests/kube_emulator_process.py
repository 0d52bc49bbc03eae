"""Run the emulator in its own process (so a benchmark's timings are the manager's alone).

    python -m tests.kube_emulator_process

Prints `url <http://127.0.0.1:PORT>` once serving, then one line `scale <monotonic> <deployment>
<replicas>` per replica write as it arrives (CLOCK_MONOTONIC is system-wide, so the parent can
compare it with its own clock). Exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

import kmock

from tests.kube_emulator import ClusterEmulator


class Reporting(list):
    def append(self, item: tuple[float, str, int]) -> None:  # type: ignore[override]
        super().append(item)
        print("scale", *item, flush=True)


async def main() -> None:
    async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.scale_writes = Reporting()
        print("url", str(server.url).rstrip("/"), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
