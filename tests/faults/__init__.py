"""The fault suite (``python -m pytest -m fault``).

SIGKILLs, fuzzing, full disks, concurrent workers, bad input.
"""
