"""rkv.sim package."""
