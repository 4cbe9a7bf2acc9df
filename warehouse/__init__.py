"""Warehouse tier: the data directory layout, the lake (landing zone) layout and DuckDB access.

Nothing here knows about Kafka: the streaming tier writes into the layout defined here, dbt and ml read it.
"""
