"""Quotas: byte-rate and request-rate meters, Kafka's quota keys, connection limits.

* :mod:`policies.quotas.config`: the ``quotas`` section of a virtual cluster;
* :mod:`policies.quotas.meters`: Kafka-style sampled rates and the throttle formula;
* :mod:`policies.quotas.store`: where meters live (in process, or later shared);
* :mod:`policies.quotas.manager`: which quota applies and how long to throttle;
* :mod:`policies.quotas.connections`: connection count and creation-rate limits.
"""

from policies.quotas.config import (
    ClientQuotaConfig,
    ConnectionLimitsConfig,
    QuotasConfig,
    TopicQuotaConfig,
    WindowConfig,
)
from policies.quotas.connections import ConnectionLimiter
from policies.quotas.manager import NO_THROTTLE, QuotaManager, QuotaMeter, Throttle
from policies.quotas.meters import RateReading, SampledRate, throttle_ms
from policies.quotas.store import InProcessQuotaStore, QuotaStore

__all__ = [
    "NO_THROTTLE",
    "ClientQuotaConfig",
    "ConnectionLimiter",
    "ConnectionLimitsConfig",
    "InProcessQuotaStore",
    "QuotaManager",
    "QuotaMeter",
    "QuotaStore",
    "QuotasConfig",
    "RateReading",
    "SampledRate",
    "Throttle",
    "TopicQuotaConfig",
    "WindowConfig",
    "throttle_ms",
]
