#!/usr/bin/python3
"""CloudTrail response latency: from a RunInstances event appearing at the local CloudTrail
endpoint to the StopInstances call reaching the local EC2 endpoint, with the real collector and
the shipped rules, at two poll intervals. The poll interval is the bound the figures are compared
to (an event waits up to one interval for the next window). Prints figures; asserts nothing.

  latency.py --bin-dir BUILD [--launches 10]
"""

import argparse
import datetime
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import cloudtrail_e2e as ct  # noqa: E402
import tripline_e2e as e2e  # noqa: E402


def measure(bin_dir, poll_ms, launches):
    fleet = e2e.Fleet(bin_dir)
    failed = True
    try:
        ids = [f"i-0bench{n:011d}" for n in range(launches)]
        endpoint, cfg = ct.start_world(fleet, seed=ct.launch_seed(ids), poll=f"{poll_ms}ms")
        fleet.start_collector(cfg)
        out = []
        for n, iid in enumerate(ids):
            # Spread the events over the poll cycle.
            time.sleep((poll_ms / 1000.0) * ((n * 7) % launches) / launches)
            endpoint.feed([ct.run_instances([iid])])
            appeared = time.time()

            def stopped():
                for c in fleet.ec2_get("calls"):
                    if c.get("action") == "StopInstances" and \
                            c["params"].get("InstanceId.1") == iid and c.get("http_status") == 200:
                        return c
                return None
            call = e2e.wait_for(f"StopInstances {iid}", stopped, timeout=60, interval=0.005)
            at = datetime.datetime.fromisoformat(call["time"]).timestamp()
            out.append((at - appeared) * 1000.0)
        failed = False
        return out
    finally:
        fleet.close(failed=failed)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--launches", type=int, default=10)
    args = ap.parse_args()
    bin_dir = os.path.abspath(args.bin_dir)
    print(f"cloudtrail latency: event at the endpoint -> StopInstances at EC2, "
          f"{args.launches} launches per poll interval")
    print(f"  {'poll interval':>14} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'mean ms':>9}")
    for poll_ms in (1000, 200):
        lat = sorted(measure(bin_dir, poll_ms, args.launches))
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
        print(f"  {poll_ms:>11} ms {statistics.median(lat):9.0f} {p95:9.0f} {lat[-1]:9.0f} "
              f"{statistics.mean(lat):9.0f}")
    print("  (the bound: one poll interval of waiting, then one LookupEvents call, the store "
          "transaction and one StopInstances call;\n   LookupEvents is called at most 2/s per "
          "region, so a poll interval under 500 ms waits 500 ms between windows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
