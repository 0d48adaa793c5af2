"""Tests of the mac package and the sidekick process subsystem."""
