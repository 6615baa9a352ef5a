"""Hypothesis profile for the CAOTE tests only (applied per test with ``@CAOTE``, never loaded
globally, so other test folders keep their own settings)."""

from hypothesis import settings

settings.register_profile("caote", derandomize=True, deadline=None, max_examples=25,
                          print_blob=True)
