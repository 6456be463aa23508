"""The gateway benchmark's load generator, run in a process of its own so that its clients
never share an interpreter (or a GIL) with the gateway or with the benchmark that times it.

Two modes, each printing one JSON line of results on stdout when done:

- ``hammer``: ``--clients`` keep-alive connections, each sending GET ``--path`` back to back
  for ``--seconds``; latencies per request, failures, the generator's own CPU time.
- ``slow``: ``--clients`` slowloris connections, each trickling an endless header one byte
  every ``--trickle`` seconds and coming back ``--comeback`` seconds after the gateway cuts
  it, held for ``--seconds`` and then all closed together. It prints ``held`` (one line) once every client
  has connected once, so the benchmark knows when the hold has begun.

Usage: ``python -m bench.gateway_load hammer --port 8099 --clients 200 --seconds 60 --path /status``
Everything talks to 127.0.0.1 only; every loop is bounded in time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from typing import Any

HOST = "127.0.0.1"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
SLOW_HEADER = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096


def raise_file_limit() -> int:
    """Thousands of sockets need thousands of descriptors: soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def read_reply(reader: asyncio.StreamReader) -> int:
    """One response (headers, then Content-Length bytes); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    match = CONTENT_LENGTH.search(head)
    if match:
        await reader.readexactly(int(match.group(1)))
    return int(head.split(b" ", 2)[1])


async def hammer(port: int, clients: int, seconds: float, path: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    latencies: list[float] = []
    failures = {"status": 0, "connection": 0}
    deadline = loop.time() + seconds

    async def client() -> None:
        writer = None
        while loop.time() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                began = time.perf_counter()
                writer.write(request)
                status = await asyncio.wait_for(read_reply(reader), 30)
                latencies.append(time.perf_counter() - began)
                failures["status"] += status != 200
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                failures["connection"] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.05)
        if writer is not None:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    return {"latencies_s": latencies, "failures": failures, "elapsed_s": elapsed}


async def slow(port: int, clients: int, seconds: float, trickle_s: float, comeback_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counts = {"connects": 0, "connect_failures": 0, "cut_by_gateway": 0, "answered": 0}
    writers: set[asyncio.StreamWriter] = set()
    first_connect = [asyncio.Event() for _ in range(clients)]
    release = asyncio.Event()

    async def client(i: int) -> None:
        while not release.is_set():
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                counts["connect_failures"] += 1
                first_connect[i].set()
                await asyncio.sleep(0.2)
                continue
            counts["connects"] += 1
            first_connect[i].set()
            writers.add(writer)
            try:
                for byte in SLOW_HEADER:
                    writer.write(bytes([byte]))
                    try:  # EOF or a reply here means the gateway cut us (a reply is its 503)
                        got = await asyncio.wait_for(reader.read(65536), trickle_s)
                    except asyncio.TimeoutError:
                        continue
                    counts["answered" if got else "cut_by_gateway"] += 1
                    break
            except OSError:
                counts["cut_by_gateway"] += 1
            finally:
                writers.discard(writer)
                writer.close()
            await asyncio.sleep(comeback_s)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.gather(*(event.wait() for event in first_connect))
    print("held", flush=True)
    held_at = loop.time()
    await asyncio.sleep(max(0.0, held_at + seconds - loop.time()))
    open_at_release = len(writers)
    release.set()
    for writer in list(writers):  # released together, as a crowd that leaves at once
        writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {**counts, "open_at_release": open_at_release}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("hammer", "slow"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--path", default="/status")
    parser.add_argument("--trickle", type=float, default=1.0, help="slow mode: seconds between header bytes")
    parser.add_argument("--comeback", type=float, default=1.0, help="slow mode: seconds before a cut client reconnects")
    args = parser.parse_args(argv)
    fds = raise_file_limit()
    if args.clients + 64 > fds:
        parser.error(f"--clients {args.clients}: the open-file limit here is {fds}")
    if args.mode == "hammer":
        result = asyncio.run(hammer(args.port, args.clients, args.seconds, args.path))
    else:
        result = asyncio.run(slow(args.port, args.clients, args.seconds, args.trickle, args.comeback))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["generator_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
