"""Fault injection, end to end: each case runs the real command line under a fault (bad input,
a NaN loss, a signal, a kill while writing) and compares what happened with what should.
``python -m tests.fault_injection`` runs them all and writes docs/reliability.md's table;
``tests/cli/test_fault_injection.py`` runs each as a test."""
