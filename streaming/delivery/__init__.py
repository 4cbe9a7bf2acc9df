"""The delivery tier: what the hot path routed (``dest.*``), delivered to real destinations — webhooks, any
Segment-compatible API, PostgreSQL — with isolation between destinations, retries kept apart from fresh events,
dead letters, replay, and an outcome per event for reconciliation.

Modules: ``config`` (the destinations file), ``senders`` (HTTP and what an answer means), ``postgres``, ``sink``
(lanes, breaker, outcomes), ``app`` (one Quix application per destination and lane), ``replay``.
"""
