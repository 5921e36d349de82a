"""Comparators of the benchmark: the same scenarios served by something other than Chorus
(`python -m bench --peer NAME`). See bench/README.md, "The bare-hub peer".

Nothing is imported here: the peer's server processes import `bench.peers.bare_hub`
alone, and the bench imports `bench.peers.cluster`."""
