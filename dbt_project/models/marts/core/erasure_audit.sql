{{ config(materialized='view') }}
-- The audit trail of erasure requests (the regulations API's SUPPRESS_WITH_DELETE): one row per request and state,
-- with when it was reached (received, suppressed_at_edge, lake_rewritten, warehouse_rebuilt, ml_artefacts_checked,
-- done, or failed) and what was done (counts only: a detail never holds an identifier). The erasure job appends to
-- <regulations dir>/erasure_audit.jsonl as it publishes each state to control.regulations
-- (warehouse/erasure_trail.py); a view, so it is current as soon as a state is recorded.
with

trail as (
    select *
    from ({{ regulations_relation('erasure_audit', {'request_id': 'VARCHAR', 'regulation_type': 'VARCHAR',
                                                     'seq': 'INTEGER', 'state': 'VARCHAR', 'reached_at': 'TIMESTAMPTZ',
                                                     'detail': 'VARCHAR', 'recorded_at': 'TIMESTAMPTZ'}) }})
    where request_id is not null and state is not null
),

deduplicated as (
    -- a re-run of the job records a state it had reached again: the first record of it counts
    select *
    from trail
    qualify row_number() over (partition by request_id, seq, state order by recorded_at, reached_at) = 1
),

final as (
    select
        request_id || ':' || cast(seq as varchar) || ':' || state as audit_id,
        request_id,
        regulation_type,
        seq,
        state,
        reached_at,
        detail,
        recorded_at
    from deduplicated
)

select * from final
