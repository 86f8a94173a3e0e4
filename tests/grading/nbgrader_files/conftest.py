"""These notebooks are nbgrader's test fixtures (see README.md), graded by
tests/grading/test_nbgrader_parity.py: nbval (``make test`` runs ``pytest tests --nbval``)
must not execute them as notebooks of the course."""

collect_ignore_glob = ["*.ipynb"]
