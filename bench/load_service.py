"""Load test of the case service on 127.0.0.1 with SQLite: 10,000 cases, 20 concurrent clients.

    python bench/load_service.py [--cases 10000] [--clients 20] [--seconds 30] [--requests 4000]

Starts `priorauth serve` in a subprocess on a free loopback port over a fresh data folder,
seeds the cases straight into the store (a few real determinations, copied), signs each client
in through the form, then has every client alternate worklist pages (50 rows, random page,
filter and sort) and case pages until the time or request budget runs out. Prints p50/p95.
The clients are asyncio tasks in this process (not the server's): see `run_clients`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ["dm-steroid-intolerance.yaml", "pm-undated-steroid-trial.yaml", "ibm-not-covered.yaml",
           "pv-rituximab-first-line.yaml", "dm-continuation-improved.yaml"]
PASSWORD = "load test password"


def seed(data: Path, n: int) -> list[str]:
    from priorauth import check
    from priorauth.service.auth import hash_password
    from priorauth.service.referrals import referral_data
    from priorauth.service.store import Store

    store = Store.open(data)
    store.add_user("load", "billing", hash_password(PASSWORD))
    pairs = []
    for name in SAMPLES:
        det = check(ROOT / "samples" / name)
        pairs.append((referral_data(det), det.to_dict()))
    ids: list[str] = []
    for start in range(0, n, 1000):
        batch = [pairs[i % len(pairs)] for i in range(start, min(n, start + 1000))]
        ids += [c.id for c in store.add_cases(batch, "seed")]
    store.close()
    return ids


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sign_in(client: httpx.Client) -> None:
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text).group(1)
    r = client.post("/signin", data={"csrf": csrf, "username": "load", "password": PASSWORD})
    if r.status_code != 303:
        raise SystemExit(f"sign-in failed: {r.status_code}")


STATUSES = ["", "", "ready", "missing_documentation", "not_eligible"]
SORTS = ["updated", "due", "status", "payer", "patient"]


async def run_clients(port: int, ids: list[str], cookies: list[str], seconds: float, requests: int):
    """One asyncio task per client, each on its own keep-alive connection, speaking just enough
    HTTP/1.1 to send a GET and read a Content-Length answer: the client process costs little CPU,
    so the figures are the server's (threads of httpx clients spent about as much CPU as the server)."""
    times: dict[str, list[float]] = {"worklist": [], "case": []}
    errors: list[str] = []
    budget = [requests]
    deadline = time.monotonic() + seconds

    async def client(n: int) -> None:
        rnd = random.Random(n)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline and budget[0] > 0:
                budget[0] -= 1
                if rnd.random() < 0.5:
                    kind = "worklist"
                    url = (f"/?status={rnd.choice(STATUSES)}&sort={rnd.choice(SORTS)}"
                           f"&order={rnd.choice(['asc', 'desc'])}&page={rnd.randint(1, 20)}")
                else:
                    kind, url = "case", f"/cases/{rnd.choice(ids)}"
                start = time.perf_counter()
                writer.write(f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookies[n]}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                elapsed = time.perf_counter() - start
                if status != 200:
                    errors.append(f"{status} {kind}")
                times[kind].append(elapsed)
        finally:
            writer.close()

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(n) for n in range(len(cookies))))
    times["wall"] = [time.perf_counter() - t0]
    times["client_cpu"] = [time.process_time() - cpu0]
    return times, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2, help="serve --workers (one per core)")
    ap.add_argument("--copy-of", type=Path, default=None,
                    help="start from a copy of this data folder (an earlier run's seed) instead of seeding")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="priorauth-load-"))
    data = tmp / "data"
    t0 = time.perf_counter()
    if args.copy_of:
        import shutil
        import sqlite3

        shutil.copytree(args.copy_of, data)
        with sqlite3.connect(data / "cases.sqlite3") as db:
            ids = [r[0] for r in db.execute("SELECT id FROM cases")]
    else:
        ids = seed(data, args.cases)
    print(f"{'copied' if args.copy_of else 'seeded'} {len(ids)} cases in {time.perf_counter() - t0:.1f} s", flush=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from priorauth.service.cli import serve; serve()",
                               "--host", "127.0.0.1", "--port", str(port), "--data", str(data),
                               "--workers", str(args.workers)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        cookies = []
        for _ in range(args.clients):
            with httpx.Client(base_url=base, timeout=30) as c:
                sign_in(c)
                cookies.append("; ".join(f"{k}={v}" for k, v in c.cookies.items()))
        times, errors = asyncio.run(run_clients(port, ids, cookies, args.seconds, args.requests))
        wall, client_cpu = times.pop("wall")[0], times.pop("client_cpu")[0]
        total = sum(len(v) for v in times.values())
        print(f"{total} requests from {args.clients} clients in {wall:.1f} s ({total / wall:.0f}/s), "
              f"{len(errors)} errors; load average {os.getloadavg()[0]:.1f}; "
              f"client CPU {client_cpu / total * 1000:.2f} ms a request")
        for kind, target in (("worklist", 300), ("case", 150)):
            ms = sorted(x * 1000 for x in times[kind])
            if not ms:
                continue
            p95 = ms[int(0.95 * (len(ms) - 1))]
            print(f"{kind:9s} n={len(ms):5d}  p50 {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  "
                  f"(target p95 < {target} ms: {'met' if p95 < target else 'NOT met'})")
        return 1 if errors else 0
    finally:
        server.terminate()
        server.wait(10)
        # the server's CPU (every worker: uvicorn's supervisor waits for them), start-up included
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"server CPU {used.ru_utime + used.ru_stime:.1f} s in all")


if __name__ == "__main__":
    sys.exit(main())
