"""Test support shared by the cross-service suites: service processes, private brokers."""
