{{ config(materialized='table') }}
-- One row per event id over all decided streams: the first delivery wins (earliest received_at, then Kafka
-- offset). A table because every downstream model reads it (STACK-FACTS: QUALIFY row_number is the fast dedupe).
with

source as (
    select * from {{ ref('stg_lake_decided') }}
    where event_id is not null
),

deduplicated as (
    select *
    from source
    qualify row_number() over (
        partition by event_id
        order by received_at, kafka_offset, kafka_partition, stream
    ) = 1
),

final as (
    select * from deduplicated
)

select * from final
