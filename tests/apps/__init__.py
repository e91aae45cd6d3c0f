"""Tiny apps and scripts that tests/test_processes.py runs in real processes (servers, pools, signals).

Each takes the endpoint and project from ``CES_ENDPOINT`` / ``CES_PROJECT_ID`` and sets ``flush_interval=60``,
so nothing leaves a process before it stops: what is stored was delivered by the way the process ended.
"""
