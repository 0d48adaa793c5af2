"""Wallaroo BYOP compatibility package: our own ``mac`` under Wallaroo's import paths, so a model
folder written for Wallaroo loads here unchanged. Only the surface BYOP code touches is implemented.
"""
