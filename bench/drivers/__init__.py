"""The systems the benchmark compares, by name: "rkv", "etcd", "pysyncobj[:config]"."""

from __future__ import annotations

from bench.drivers.base import KV, Driver, NotReady

__all__ = ["KV", "Driver", "NotReady", "driver_class", "make_driver", "parse_series"]


def driver_class(system: str) -> type[Driver]:
    # Imported lazily: a driver's client library need not be installed to use the others.
    if system == "rkv":
        from bench.drivers.rkv import RkvDriver

        return RkvDriver
    if system == "etcd":
        from bench.drivers.etcd import EtcdDriver

        return EtcdDriver
    if system == "pysyncobj":
        from bench.drivers.pysyncobj import PySyncObjDriver

        return PySyncObjDriver
    raise ValueError(f"unknown system {system!r} (rkv, etcd, pysyncobj)")


def parse_series(text: str) -> tuple[str, str]:
    """ "pysyncobj:nobatch" -> ("pysyncobj", "nobatch"); "etcd" -> ("etcd", "default")."""
    system, _, config = text.strip().partition(":")
    return system, config or "default"


def make_driver(series: str) -> Driver:
    system, config = parse_series(series)
    return driver_class(system)(config)
