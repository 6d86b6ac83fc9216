"""Ingress: ``/hooks/{channel}``, its authentication, headers, channel cache and readiness."""
