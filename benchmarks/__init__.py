"""NanoSocket's benchmark suite: a C load generator, the servers under test, and the report.

Run it with ``make bench`` or ``python -m benchmarks`` (see ``benchmarks/README.md``).
"""
