"""What authentication, authorisation, quotas and the audit log cost per request.

Two apps in one process, on the fake engine from tests/ (so the request itself is cheap and the
overhead is what is left to see), driven through the whole ASGI stack with httpx:

    off   no accounts, loopback: no credential checked, and the quota and audit observers
          detached from the generation service (the server as it was before accounts)
    on    an admin exists; the request carries a member's API key scoped to one model, the
          member has a requests-per-minute and a tokens-per-day quota, the audit log records

Requests alternate between the two apps (off, on, on, off, ...), so both see the same noise, in
several rounds; the overhead is the difference of the medians (p50) per round, reported as the
median over rounds with its range. The parts are also timed
alone: the key check, the quota check, queueing an audit record, and how fast the background
writer empties its queue.

    .venv/bin/python bench/auth.py            # about 30 s
    .venv/bin/python bench/auth.py --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))  # the fake engine lives with the tests

from bench.results_file import write_results  # noqa: E402
from tests.fake_engine import fake_registry, tiny_gguf  # noqa: E402

from bendi.audit.log import AuditEntry  # noqa: E402
from bendi.config import Settings  # noqa: E402
from bendi.core.context import RequestContext  # noqa: E402
from bendi.server.app import create_app  # noqa: E402
from bendi.services import Services  # noqa: E402

MODEL = "fake:1"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "one two three four"}]}
CLI = RequestContext.local("bench")


def build(home: Path, accounts: bool) -> tuple[Services, Any, dict[str, str]]:
    settings = Settings(home=home)
    services = Services.build(settings, engines=fake_registry()[0])
    services.store.import_file(tiny_gguf(home.parent / f"{home.name}.gguf"), MODEL)
    headers: dict[str, str] = {}
    if not accounts:
        services.generation.observers.remove(services.auth.quotas)
        services.generation.observers.remove(services.audit)
    if accounts:
        d = services.auth.directory
        d.add_user("boss", role="admin", password="boss-password", actor=CLI)
        d.add_user("li", password="li-password", actor=CLI)
        _, key = d.create_key("li", models=(MODEL,), actor=CLI)
        d.set_quota(user="li", requests_per_minute=10**9, tokens_per_day=10**12, actor=CLI)
        headers = {"Authorization": f"Bearer {key}"}
    return services, create_app(settings, services=services), headers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(apps: dict[str, tuple[Any, dict[str, str]]], n: int, rounds: int) -> list[dict[str, list[float]]]:
    out: list[dict[str, list[float]]] = []
    clients = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
               for name, (app, _) in apps.items()}
    try:
        for name, (_, headers) in apps.items():  # warm up: first model load, first snapshot
            for _ in range(20):
                assert (await clients[name].post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
        order = list(apps)
        for _ in range(rounds):
            times: dict[str, list[float]] = {name: [] for name in apps}
            for i in range(n):
                for name in (order if i % 2 == 0 else order[::-1]):
                    headers = apps[name][1]
                    started = time.perf_counter()
                    resp = await clients[name].post("/v1/chat/completions", json=BODY, headers=headers)
                    times[name].append(time.perf_counter() - started)
                    assert resp.status_code == 200, resp.text
            out.append(times)
    finally:
        for client in clients.values():
            await client.aclose()
    return out


def time_parts(services: Services, app: Any, key: str, n: int) -> dict[str, float]:
    """Median microseconds of each part, called alone."""
    def median_us(fn: Any) -> float:
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1e6)
        return statistics.median(samples)

    from bendi.server.access import match, route_table

    table = route_table(app)
    principal = services.auth.authenticate(key)
    context = RequestContext(principal=principal.name, route="POST /v1/chat/completions", client="127.0.0.1",
                             api_key_id=principal.key_id, access=principal)
    entry = AuditEntry.of(context, "chat", "ok", model=MODEL, prompt_tokens=4, completion_tokens=4)
    parts = {
        "route match (the access rule's route)": median_us(lambda: match(table, "POST", "/v1/chat/completions")),
        "auth version check (1 SQLite read)": median_us(services.auth.snapshot),
        "API key check (snapshot + SHA-256)": median_us(lambda: services.auth.authenticate(key)),
        "quota check (rpm window + tokens today)": median_us(lambda: services.auth.quotas.check(context)),
        "queue one audit record": median_us(lambda: services.audit.add(entry)),
    }
    services.writer.flush()
    started = time.perf_counter()
    for _ in range(5000):
        services.audit.add(entry)
    services.writer.flush()
    parts["writer: records per second (chained, batched)"] = 5000 / (time.perf_counter() - started)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per app and round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        off_svc, off_app, off_headers = build(Path(tmp) / "off", accounts=False)
        on_svc, on_app, on_headers = build(Path(tmp) / "on", accounts=True)
        try:
            runs = asyncio.run(drive({"off": (off_app, off_headers), "on": (on_app, on_headers)}, args.requests,
                                     args.rounds))
            parts = time_parts(on_svc, on_app, on_headers["Authorization"][7:], 2000)
            audited = len(on_svc.audit.query(kind="chat", limit=None))
        finally:
            off_svc.close()
            on_svc.close()
    times = {name: [t for run in runs for t in run[name]] for name in ("off", "on")}
    rows = {name: {"p50_ms": statistics.median(t) * 1000, "p90_ms": percentile(t, 0.9) * 1000}
            for name, t in times.items()}
    diffs = [(statistics.median(run["on"]) - statistics.median(run["off"])) * 1000 for run in runs]
    overhead_p50 = statistics.median(diffs)
    print(f"\n{args.rounds} rounds x {args.requests} non-streamed chat requests per app, fake engine, alternating\n")
    print(f"{'app':<6}{'p50 ms':>10}{'p90 ms':>10}")
    for name, row in rows.items():
        print(f"{name:<6}{row['p50_ms']:>10.3f}{row['p90_ms']:>10.3f}")
    print(f"\noverhead of auth + quotas + audit, p50: {overhead_p50:+.3f} ms (median of rounds; range "
          f"{min(diffs):+.3f} .. {max(diffs):+.3f}; target < 1 ms); {audited} chat records written")
    print("\nparts, alone (median):")
    for name, value in parts.items():
        unit = "/s" if "per second" in name else " us"
        print(f"  {name:<50}{value:>10.1f}{unit}")
    write_results(RESULTS / "auth.json", "auth", started, requests=args.requests, rounds=args.rounds, apps=rows,
                  overhead_p50_ms=overhead_p50, overhead_p50_ms_per_round=diffs, parts=parts)


if __name__ == "__main__":
    main()
