"""Configuration objects handed to BYOP builders."""
