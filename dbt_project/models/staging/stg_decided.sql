{{ config(
    materialized='incremental',
    unique_key='event_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    pre_hook="{{ erasure_reset() }}",
    post_hook=["{{ lake_mark_consumed('stg_decided') }}", "{{ erasure_remember() }}"]
) }}
-- One row per event id and device over all decided streams: the first delivery wins (earliest received_at, then
-- Kafka offset). STACK-FACTS: QUALIFY row_number is the fast dedupe. Retries come from the device that sent the
-- event; another device sending the same id (a robot replaying ids it saw) sent a different event: it is kept, under
-- `<event_id>@<device_id>` (the id as sent stays in `sent_event_id`, `event_id_reused` is true), so nobody's event
-- is merged away and event_id stays unique. A person's event keeps the id over a quarantined bot's, then the first
-- device to use it; event_id_conflicts lists them all.
-- Incremental: reads only the lake files it has not consumed yet (manifest stg_lake_files, whatever their
-- event_date partition: late events land in old partitions) and lets them compete with the rows already kept for
-- the same event ids, so a re-delivered duplicate of an old event never reappears and an earlier delivery read
-- late still wins. When the set of erased identifiers changes, the table is rebuilt from every file.
-- depends_on: {{ ref('stg_lake_files') }}
{%- set incremental = is_incremental() and not erasure_changed() %}
with

source as (
    {%- if incremental %}
    select *, event_id as sent_event_id from ({{ lake_decided_rows(files=lake_pending_files('stg_decided')) }})
    where event_id is not null
    {%- else %}
    select *, event_id as sent_event_id from {{ ref('stg_lake_decided') }}
    where event_id is not null
    {%- endif %}
),

candidates as (
    select * from source
    {%- if incremental %}
    union all by name
    select * exclude (event_id_reused) replace (sent_event_id as event_id) from {{ this }}
    where sent_event_id in (select sent_event_id from source)
    {%- endif %}
),

deduplicated as (
    select *
    from candidates
    qualify row_number() over (
        -- an erased person's suppressed record has no device: it competes with the other device-less records
        partition by sent_event_id, coalesce(device_id, '')
        -- the hot path's ledger-only record of a client retry never wins over the decided event it repeats
        -- (a producer retry re-sends the same record, with the same received_at), whatever that decision was: a
        -- consent suppression has no ledger reason, and a null here would sort last (B12)
        order by (stream = 'suppressed'
                  and coalesce(json_extract_string(ledger, '$.reason'), '') = 'duplicate_event_id'),
                 received_at, kafka_offset, kafka_partition, stream
    ) = 1
),

claimed as (
    -- which device keeps the id as is: a person's event over a quarantined bot's, then the first to use it
    select
        *,
        row_number() over (
            partition by sent_event_id
            order by (stream = 'quarantine'), received_at, kafka_offset, kafka_partition, stream
        ) > 1 as event_id_reused
    from deduplicated
),

final as (
    select
        * replace (
            case when event_id_reused then sent_event_id || '@' || coalesce(device_id, '') else sent_event_id end
                as event_id
        )
    from claimed
)

select * from final
