"""Wallaroo BYOP compatibility package (mac.*)."""
