"""Hot path: event contract, first-mile decisions, policy, Quix Streams worker, lake sink, embedded broker.

Must not import Dagster, dbt or MLflow: the worker image stays small.
"""
