"""Runnable examples for ``resilient``: one file per pattern and a small shop of services.

Run a single example with ``python examples/<name>.py``; run the live demo with
``make demo`` (``python examples/demo.py``). The package form exists so the shop services can
be started as ``python -m examples.shop.<service>`` from the repository root.
"""
