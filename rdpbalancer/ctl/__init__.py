"""`rdpbalancer ctl`: a client of the admin API for scripts and shells. It runs on admin
workstations too, so it imports the standard library only (tests/unit/test_architecture.py)."""

from rdpbalancer.ctl.main import add_ctl_parser, main, run_ctl

__all__ = ["add_ctl_parser", "main", "run_ctl"]
