"""Maintenance scripts of the repository: the documentation's result tables and its commands, checked."""
