"""Choose a domain's documents under a byte cap, balanced across its sources."""

from __future__ import annotations

import hashlib
import heapq

from megatron_acodm.demo_corpus.documents import utf8_size


def hash_order(documents: list[str], salt: str) -> list[str]:
    """A fixed pseudo-random order: by sha256 of salt and text, so it does not depend on input order
    and adding one document does not reshuffle the rest."""
    return sorted(documents, key=lambda text: hashlib.sha256(f"{salt}\0{text}".encode("utf-8")).digest())


def take_balanced(pools: list[list[str]], cap_bytes: int) -> list[tuple[int, str]]:
    """Take documents from the pools in turn, always from the pool with the fewest bytes taken so far.

    Ties go to the earlier pool. Stops at the first document that would exceed `cap_bytes` or when
    every pool is exhausted. Returns (pool index, document) in the order taken, which interleaves
    the sources. Balancing bytes rather than counts keeps a source of long documents from crowding
    out one of short documents.
    """
    taken: list[tuple[int, str]] = []
    total = 0
    queue = [(0, index) for index, pool in enumerate(pools) if pool]
    heapq.heapify(queue)
    position = [0] * len(pools)
    while queue:
        pool_bytes, index = heapq.heappop(queue)
        document = pools[index][position[index]]
        size = utf8_size(document)
        if total + size > cap_bytes:
            break
        taken.append((index, document))
        total += size
        position[index] += 1
        if position[index] < len(pools[index]):
            heapq.heappush(queue, (pool_bytes + size, index))
    return taken
