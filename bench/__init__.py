"""`make bench`: a bounded load benchmark of Chorus's SSE delivery on real server processes.

Modules: `client` (the light SSE subscriber and its worker processes), `publisher` (REST
calls and paced publishing), `procstats` (server CPU and memory from /proc), `scenarios`
(what each scenario does), `report` (the table and the JSON file), `__main__` (the CLI).
"""
