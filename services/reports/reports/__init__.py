"""Scheduled analytical reports over the platform's event topics, delivered by email, Slack and a web portal."""
