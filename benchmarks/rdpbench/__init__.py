"""The rdpbalancer benchmark suite: C load generator and test server, proxies under test, report.

Entry point: ``python benchmarks/run.py`` (see benchmarks/README.md).
"""
