"""The pure state machines, one per policy: no locks, no I/O, no sleeping, no telemetry.

Every function here takes the current time as an argument and only updates fields, so the
cores can be checked against reference models (hypothesis state machines in ``tests/``)
without threads or event loops, and a front end can guard one core with one short lock. The
cores import nothing of ``resilient`` but each other (and the errors).
"""
