"""Explanation methods; each module registers its methods in :mod:`registry`."""
