"""rdpbalancer: a load balancer for Remote Desktop (RDP) farms."""

__version__ = "0.1.0"
