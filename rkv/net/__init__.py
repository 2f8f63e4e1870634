"""rkv.net package."""
