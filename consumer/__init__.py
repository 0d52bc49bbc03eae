"""Consumers: arq workers that run offline queries on DuckDB, one pool per resource group.

engine (DuckDB, blocking) · execute (payload -> result + summary) · resources (cgroup limits)
· worker (arq glue, heartbeats, drain).
"""
