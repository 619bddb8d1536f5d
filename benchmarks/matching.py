"""Greedy-nearest vs batched (Hungarian) matching on the same simulated city.

    python -m benchmarks.matching --drivers 300 --rate 2.0 --minutes 60 --window 2 --seed 7

A 12 x 12 km city with a dense centre; drivers start spread out, customers request
pickups (Poisson arrivals, 60 % of them in the centre). Both policies see exactly the
same drivers and requests and use the platform's own code (``streams.matching``:
candidate ETA = straight line x road factor / speed, ``greedy`` and ``assign``):

- greedy: each request, as it arrives, takes the free driver with the lowest ETA;
- batched: requests are gathered for ``--window`` seconds and assigned together at
  minimum total ETA.

A driver drives to the pickup, then to the dropoff, and is free again there. Reported:
mean and p95 ETA to pickup at assignment, and mean/p95 customer wait (request → pickup,
including the batching window and time without a free driver).

ETA error: the same fleet drives the demo's road graph (``fleetstream.city``: speed
limits, closed blocks, a congested centre) and pings every few seconds; the platform's
own learning (``streams.eta.learn``) turns those pings into speeds per H3 cell, and
``streams.eta.travel_s`` predicts the time to pickup at assignment and every 30 s on the
way. Each prediction is compared with the time the vehicle actually arrived; the same
for a constant-speed ETA (``default_speed_mps``). Pure simulation: no services involved.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Settings
from fleetstream.city import City, Vehicle
from streams.matching import NO_ROUTE, assign, eta_seconds, greedy
from streams.speeds import learn, speed_key, travel_s

SIZE_M = 12_000.0


@dataclass(order=True)
class Request:
    t: float
    pickup: tuple[float, float] = field(compare=False)
    dropoff: tuple[float, float] = field(compare=False)


def place(rng: random.Random) -> tuple[float, float]:
    if rng.random() < 0.6:
        return (rng.gauss(SIZE_M / 2, 1500) % SIZE_M, rng.gauss(SIZE_M / 2, 1500) % SIZE_M)
    return (rng.uniform(0, SIZE_M), rng.uniform(0, SIZE_M))


def dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def city(drivers: int, rate: float, seconds: float, seed: int) -> tuple[list[tuple[float, float]], list[Request]]:
    rng = random.Random(seed)
    fleet = [(rng.uniform(0, SIZE_M), rng.uniform(0, SIZE_M)) for _ in range(drivers)]
    t, reqs = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return fleet, reqs
        reqs.append(Request(t, place(rng), place(rng)))


def simulate(policy: str, fleet: list[tuple[float, float]], reqs: list[Request], window: float,
             s: Settings) -> dict[str, float]:  # fmt: skip
    speed = s.default_speed_mps
    pos = list(fleet)
    free_at = [0.0] * len(fleet)  # when each driver is free again (at pos[i])
    queue: list[Request] = []
    etas: list[float] = []
    waits: list[float] = []
    pending = list(reqs)
    pending.reverse()
    tick = window if policy == "batched" else 0.5
    now = 0.0
    horizon = (reqs[-1].t if reqs else 0) + 3600
    while (pending or queue) and now < horizon:
        now += tick
        while pending and pending[-1].t <= now:
            queue.append(pending.pop())
        if not queue:
            continue
        free = [i for i in range(len(pos)) if free_at[i] <= now]
        if not free:
            continue
        costs = [[eta_seconds(dist(pos[d], r.pickup), speed, s) if dist(pos[d], r.pickup) <= 15_000 else NO_ROUTE
                  for d in free] for r in queue]  # fmt: skip
        pairs = greedy(costs) if policy == "greedy" else assign(costs)
        served = set()
        for qi, fj in pairs:
            r, d = queue[qi], free[fj]
            eta = costs[qi][fj]
            etas.append(eta)
            waits.append(now - r.t + eta)
            trip = eta_seconds(dist(r.pickup, r.dropoff), speed, s)
            free_at[d] = now + eta + trip
            pos[d] = r.dropoff
            served.add(qi)
        queue = [r for i, r in enumerate(queue) if i not in served]
    return {
        "served": len(etas),
        "unserved": len(queue) + len(pending),
        "pickup_eta_mean_s": round(statistics.fmean(etas), 1),
        "pickup_eta_p95_s": round(_p(etas, 95), 1),
        "wait_mean_s": round(statistics.fmean(waits), 1),
        "wait_p95_s": round(_p(waits, 95), 1),
    }


def eta_error(drivers: int, rate: float, seconds: float, seed: int, s: Settings,
              dt: float = 2.0, ping_every: float = 6.0, predict_every: float = 30.0) -> dict[str, object]:  # fmt: skip
    """Predicted vs actual time to pickup, learned speeds against a constant speed."""
    rng = random.Random(seed)
    city = City.load()
    fleet = [Vehicle(city, rng.randrange(len(city.nodes)), rng.uniform(0.85, 1.05)) for _ in range(drivers)]
    for v in fleet:
        v.go(city.random_node(rng))  # cruising: idle drivers roam, and their pings teach the model
    hour = 8
    speeds: dict[str, float] = {}
    job: dict[int, tuple[str, int]] = {}  # vehicle → (phase, target node)
    job_dropoff: dict[int, int] = {}
    predictions: dict[int, list[tuple[float, float, float]]] = {}  # vehicle → (at, learned, constant)
    err_learned: list[float] = []
    err_constant: list[float] = []
    next_request = rng.expovariate(rate)
    t = 0.0
    while t < seconds:
        t += dt
        while next_request <= t:
            next_request += rng.expovariate(rate)
            pickup, dropoff = city.random_node(rng, 0.6), city.random_node(rng)
            free = [i for i in range(len(fleet)) if i not in job]
            if not free:
                continue
            plat, plon = city.nodes[pickup]
            best = min(free, key=lambda i: travel_s(*fleet[i].position, plat, plon, speeds, hour, s))
            fleet[best].go(pickup)
            job[best], job_dropoff[best], predictions[best] = ("to_pickup", pickup), dropoff, []
        tick_ping = int(t / ping_every) != int((t - dt) / ping_every)
        tick_predict = int(t / predict_every) != int((t - dt) / predict_every)
        for i, v in enumerate(fleet):
            arrived = v.step(dt)
            lat, lon = v.position
            if tick_ping and v.speed_mps > 0.5:
                k = speed_key(lat, lon, hour)
                speeds[k] = learn(speeds.get(k), v.speed_mps, s.speed_learning_rate)
            phase = job.get(i)
            if phase is None:
                if arrived or not v.moving:
                    v.go(city.random_node(rng))
                continue
            if phase[0] == "to_pickup":
                if arrived or not v.moving:
                    for at, learned, constant in predictions.pop(i):
                        err_learned.append(abs(at + learned - t))
                        err_constant.append(abs(at + constant - t))
                    job[i] = ("to_dropoff", job_dropoff[i])
                    v.go(job_dropoff[i])
                elif tick_predict or not predictions[i]:
                    plat, plon = city.nodes[phase[1]]
                    predictions[i].append((t, travel_s(lat, lon, plat, plon, speeds, hour, s),
                                           travel_s(lat, lon, plat, plon, {}, hour, s)))  # fmt: skip
            elif arrived or not v.moving:
                del job[i]
                v.go(city.random_node(rng))
    out: dict[str, object] = {"predictions": len(err_learned)}
    if err_learned:
        for name, errs in (("learned", err_learned), ("constant", err_constant)):
            out[f"{name}_mae_s"] = round(statistics.fmean(errs), 1)
            out[f"{name}_p90_s"] = round(_p(errs, 90), 1)
        out["learned_over_constant_mae"] = round(statistics.fmean(err_learned) / statistics.fmean(err_constant), 3)
    return out


def _p(xs: list[float], q: float) -> float:
    return heapq.nsmallest(max(1, math.ceil(len(xs) * q / 100)), xs)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drivers", type=int, default=300)
    ap.add_argument("--rate", type=float, default=2.0, help="requests per second")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--window", type=float, default=2.0, help="batching window, seconds")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-eta", action="store_true", help="skip the (slower) driving simulation for ETA error")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "matching.json")
    args = ap.parse_args()
    s = Settings()
    fleet, reqs = city(args.drivers, args.rate, args.minutes * 60, args.seed)
    result = {"args": vars(args) | {"out": str(args.out)}, "requests": len(reqs),
              "greedy": simulate("greedy", fleet, reqs, args.window, s),
              "batched": simulate("batched", fleet, reqs, args.window, s)}  # fmt: skip
    g, b = result["greedy"], result["batched"]
    result["batched_over_greedy_pickup_eta_mean"] = round(b["pickup_eta_mean_s"] / g["pickup_eta_mean_s"], 3)
    if not args.skip_eta:
        result["eta_error"] = eta_error(args.drivers, args.rate, args.minutes * 60, args.seed, s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
