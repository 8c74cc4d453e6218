"""Staged rollout: canary tenants first, then waves of growing cumulative size.

The waves are taken in the stable order of ``--shard``'s hash (the same on every machine and
run), over the selected tenants that are not canaries. A spec such as ``10,100,25%,100%`` gives
cumulative sizes: counts, or percentages of those tenants (rounded up). The sizes a spec gives
for these tenants must grow until every tenant is reached (``2,10%`` on four tenants, 2 then 1,
is refused). Tenants past the last wave are not run (``--resume`` continues with them, as one
group after the run's waves still left; see migration._rollout).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from .errors import UsageError
from .selection import hash_order

_SIZE = re.compile(r"([0-9]+)(%?)")  # ASCII digits only: int() would take ٣ and ３ too


def parse_waves(spec: str) -> list[tuple[int, bool]]:
    """``10,100,25%,100%`` -> [(10, False), (100, False), (25, True), (100, True)]; refused
    (UsageError) when malformed, empty, out of range, or when sizes of one kind do not grow."""
    sizes: list[tuple[int, bool]] = []
    for part in spec.split(","):
        match = _SIZE.fullmatch(part.strip())
        if not match:
            raise UsageError(f"--waves {spec!r}: use cumulative counts or percentages, e.g. --waves 10,100,25%,100%")
        number, percent = int(match[1]), bool(match[2])
        if number < 1 or (percent and number > 100):
            raise UsageError(f"--waves {spec!r}: {part.strip()} is out of range (counts from 1, percentages 1% to 100%)")
        if sizes and sizes[-1][1] and not percent:  # 50%,3: whether 3 adds anything depends on the fleet's size
            raise UsageError(f"--waves {spec!r}: counts come before percentages, e.g. --waves 10,100,25%,100%")
        previous = [n for n, p in sizes if p == percent]
        if previous and number <= previous[-1]:
            raise UsageError(f"--waves {spec!r}: the sizes are cumulative and must grow ({previous[-1]} then {number})")
        sizes.append((number, percent))
    return sizes


def groups(
    selected: Sequence[str], canaries: Sequence[str], waves: Sequence[tuple[int, bool]]
) -> tuple[list[list[str]], list[str]]:
    """The groups to run one after the other (the canaries first, then each wave) and the
    tenants no wave reaches."""
    unknown = [c for c in canaries if c not in selected]
    if unknown:
        raise UsageError(f"--canary {', '.join(unknown)}: not among the selected tenants")
    rest = [t for t in hash_order(selected) if t not in canaries]
    planned: list[list[str]] = [list(dict.fromkeys(canaries))] if canaries else []
    done = 0
    for number, percent in waves or [(100, True)]:
        size = min(len(rest), math.ceil(len(rest) * number / 100) if percent else number)
        if size <= done < len(rest):  # 2,10% on 4 tenants is 2 then 1: the spec's text grows, its waves do not
            raise UsageError(
                f"--waves: {number}{'%' if percent else ''} of these {len(rest)} tenants is {size}, not more than "
                f"the {done} before it: the sizes are cumulative and must grow (give fewer or larger waves)"
            )
        if size > done:  # once every tenant is reached, later waves have nothing left to add
            planned.append(rest[done:size])
            done = size
    return planned, rest[done:]
