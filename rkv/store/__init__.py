"""rkv.store package."""
