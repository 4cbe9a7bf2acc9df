-- Dead-lettered (invalid) events with the machine-readable reason and the original bytes, one row per Kafka
-- record (an invalid event may have no usable event_id). Rows mentioning an erased identifier are dropped.
with

source as (
    {{ lake_relation('dlq') }}
),

erased as (
    select identifier_value from {{ ref('stg_erased_identifiers') }}
),

renamed as (
    select
        md5(concat_ws('|', coalesce(kafka_topic, ''), coalesce(cast(kafka_partition as varchar), ''),
                      coalesce(cast(kafka_offset as varchar), ''), coalesce(event_id, ''),
                      coalesce(cast(received_at as varchar), ''))) as dlq_id,
        event_id,
        reason,
        detail,
        original,
        received_at,
        cast(timezone('UTC', received_at) as date) as received_date,
        raw_partition,
        raw_offset,
        kafka_topic,
        kafka_partition,
        kafka_offset
    from source
),

deduplicated as (
    select * from renamed
    qualify row_number() over (partition by dlq_id order by received_at) = 1
),

final as (
    select * from deduplicated
    where not exists (
        select 1 from erased
        where contains(cast(deduplicated.original as varchar), erased.identifier_value)
    )
)

select * from final
