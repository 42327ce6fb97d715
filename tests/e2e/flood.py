"""A flooding client, run as its own process so that it does not slow the test's own
event loop: `python -m tests.e2e.flood PORT SOURCE CONNECTIONS SECONDS`.

Each connection opens stream after stream of ten channel names never seen before and
drops it as soon as the head arrives. Prints `opened refused` at the end."""

from __future__ import annotations

import asyncio
import sys
import uuid


async def one_connection(port: int, source: str, until: float, counts: list[int]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        query = "&".join(f"channel=fld-{uuid.uuid4().hex[:10]}" for _ in range(10))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            writer.write(f"GET /events/?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.read(64), 5)
            counts[0 if head.startswith(b"HTTP/1.1 200") else 1] += 1
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()


async def main(port: int, source: str, connections: int, seconds: float) -> None:
    until = asyncio.get_running_loop().time() + seconds
    counts = [0, 0]
    await asyncio.gather(*(one_connection(port, source, until, counts) for _ in range(connections)))
    print(*counts)


if __name__ == "__main__":
    port, source, connections, seconds = sys.argv[1:5]
    asyncio.run(main(int(port), source, int(connections), float(seconds)))
