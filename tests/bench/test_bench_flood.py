"""bench.flood: the pure part (reading the leader's connection counters from /metrics)."""

from __future__ import annotations

from bench.flood import connection_metrics

PAGE = """# HELP rkv_connections Connections held, by state.
# TYPE rkv_connections gauge
rkv_connections{state="handshaking"} 254.0
rkv_connections{state="peer"} 2.0
# TYPE rkv_connections_shed_total counter
rkv_connections_shed_total{reason="per_source"} 17452.0
rkv_connections_accepted_total 17729.0
rkv_connections_accepted_created 1.7e9
rkv_term 3.0
rkv_connections{state="client"} not-a-number
"""


def test_connection_metrics_keeps_labels_and_only_connection_samples() -> None:
    assert connection_metrics(PAGE) == {
        'rkv_connections{state="handshaking"}': 254.0,
        'rkv_connections{state="peer"}': 2.0,
        'rkv_connections_shed_total{reason="per_source"}': 17452.0,
        "rkv_connections_accepted_total": 17729.0,
    }
