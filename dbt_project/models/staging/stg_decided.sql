{{ config(
    materialized='incremental',
    unique_key='event_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    pre_hook="{{ erasure_reset() }}",
    post_hook=["{{ lake_mark_consumed('stg_decided') }}", "{{ erasure_remember() }}"]
) }}
-- One row per event id over all decided streams: the first delivery wins (earliest received_at, then Kafka
-- offset). STACK-FACTS: QUALIFY row_number is the fast dedupe.
-- Incremental: reads only the lake files it has not consumed yet (manifest stg_lake_files, whatever their
-- event_date partition: late events land in old partitions) and lets them compete with the rows already kept for
-- the same event ids, so a re-delivered duplicate of an old event never reappears and an earlier delivery read
-- late still wins. When the set of erased identifiers changes, the table is rebuilt from every file.
-- depends_on: {{ ref('stg_lake_files') }}
{%- set incremental = is_incremental() and not erasure_changed() %}
with

source as (
    {%- if incremental %}
    select * from ({{ lake_decided_rows(files=lake_pending_files('stg_decided')) }})
    where event_id is not null
    {%- else %}
    select * from {{ ref('stg_lake_decided') }}
    where event_id is not null
    {%- endif %}
),

candidates as (
    select * from source
    {%- if incremental %}
    union all by name
    select * from {{ this }}
    where event_id in (select event_id from source)
    {%- endif %}
),

deduplicated as (
    select *
    from candidates
    qualify row_number() over (
        partition by event_id
        -- the hot path's ledger-only record of a client retry never wins over the decided event it repeats
        -- (a producer retry re-sends the same record, with the same received_at)
        order by (stream = 'suppressed' and json_extract_string(ledger, '$.reason') = 'duplicate_event_id'),
                 received_at, kafka_offset, kafka_partition, stream
    ) = 1
),

final as (
    select * from deduplicated
)

select * from final
