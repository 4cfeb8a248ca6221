"""Sticky-table storage adapters (implementations of `rdpbalancer.policy.ports.StickyStore`)."""


class StoreError(Exception):
    """The sticky store cannot be opened or read (raised at start only; runtime faults are logged)."""
