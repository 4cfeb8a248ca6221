"""The session directory's sources: what each host says about its own sessions (xrdp-sesman,
Windows MS-TSTS, a command, or the host's own push), polled in the background."""
