"""What a key costs the caller to try: right, wrong, unknown, malformed, revoked (not run by make test).

    .venv/bin/python bench/auth_timing.py               # 80 calls per kind, interleaved
    .venv/bin/python bench/auth_timing.py --calls 20    # harness check

A local platform (`lambdascope up`'s, SQLite) is started and Identity.WhoAmI is called through
gRPC, as an attacker would, with keys of six kinds, the kinds interleaved in a random order so a
burst of other work on the machine hits all of them alike:

    right, first use    a valid key never presented before (scrypt, then the key's row)
    right, again        a valid key presented before (the server remembers the key's sha256:
                        its row is read, no scrypt)
    wrong secret        a known key id with a wrong secret (scrypt against the stored hash)
    unknown id          a well-formed key whose id does not exist (scrypt against a dummy hash)
    malformed           not "lsk_<id>_<secret>" (scrypt against the dummy hash)
    revoked             a valid, revoked key never presented before (scrypt, then refused)

What must hold: every refused kind costs what "right, first use" costs, within the run's own
noise (the spread between the two halves of each kind's calls), so the time of a refusal says
nothing about whether the id exists, the secret was close, or the key was revoked. A key
presented before is answered faster: by then its answer (OK) has already told the caller it is
right, so its speed tells nothing more. Prints one table; results are written down in
docs/benchmarks.md §6.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time

import grpc

from lambdascope import auth
from lambdascope.local import LocalPlatform
from lambdascope.v1 import identity_pb2, identity_pb2_grpc

KINDS = ("right, first use", "right, again", "wrong secret", "unknown id", "malformed", "revoked")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=80, help="calls per kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as data_dir, LocalPlatform(data_dir) as platform:
        with platform.client() as admin:
            admin.create_team("bench")
            fresh = [admin.create_key("bench", auth.Role.ROLE_READER).secret for _ in range(args.calls)]
            revoked = [admin.create_key("bench", auth.Role.ROLE_READER).secret for _ in range(args.calls)]
            for key in revoked:
                admin.revoke_key(auth.split_key(key)[0])
            known = admin.create_key("bench", auth.Role.ROLE_READER).secret
        known_id = auth.split_key(known)[0]
        keys = {
            "right, first use": iter(fresh),
            "right, again": iter([known] * args.calls),
            "wrong secret": iter(f"lsk_{known_id}_{auth.split_key(auth.new_key()[1])[1]}"
                                 for _ in range(args.calls)),
            "unknown id": iter(auth.new_key()[1] for _ in range(args.calls)),
            "malformed": iter("not-a-key-" + str(i) for i in range(args.calls)),
            "revoked": iter(revoked),
        }
        order = [kind for kind in KINDS for _ in range(args.calls)]
        rng.shuffle(order)
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        with grpc.insecure_channel(platform.endpoints["registry"]) as channel:
            stub = identity_pb2_grpc.IdentityStub(channel)
            call(stub, known)  # warm the channel and remember the known key
            for kind in order:
                key = next(keys[kind])
                start = time.perf_counter()
                code = call(stub, key)
                times[kind].append(time.perf_counter() - start)
                expected = grpc.StatusCode.OK if kind.startswith("right") else grpc.StatusCode.UNAUTHENTICATED
                if code != expected:
                    print(f"{kind}: answered {code.name}, expected {expected.name}", file=sys.stderr)
                    return 1
    report(times)
    return 0


def call(stub, key: str) -> grpc.StatusCode:
    try:
        stub.WhoAmI(identity_pb2.WhoAmIRequest(), metadata=[("authorization", f"Bearer {key}")],
                    timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def report(times: dict[str, list[float]]) -> None:
    base = statistics.median(times["right, first use"])
    print(f"{'kind':<18} {'calls':>5} {'median ms':>10} {'p10':>7} {'p90':>7} "
          f"{'halves ms':>15} {'/ first use':>11}")
    for kind, values in times.items():
        ms = sorted(v * 1e3 for v in values)
        half = len(values) // 2
        halves = (statistics.median(values[:half]) * 1e3, statistics.median(values[half:]) * 1e3)
        print(f"{kind:<18} {len(ms):>5} {statistics.median(ms):>10.1f} "
              f"{ms[len(ms) // 10]:>7.1f} {ms[len(ms) * 9 // 10]:>7.1f} "
              f"{halves[0]:>7.1f}/{halves[1]:<7.1f} {statistics.median(values) / base:>11.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
