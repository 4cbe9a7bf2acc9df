-- One row per event and destination topic the hot path delivered it to (lake stream `deliveries`, metadata only),
-- with the consent stamped at that instant. Empty until the lake sink writes the stream. Erased profiles removed.
with

source as (
    {{ lake_relation('deliveries') }}
),

destinations as (
    select destination from {{ ref('destination_purposes') }} group by destination
),

erased as (
    select identifier_value from {{ ref('stg_erased_identifiers') }}
),

renamed as (
    select
        source.event_id,
        -- the topic may carry the installation's prefix (FIRSTMILE_TOPIC_PREFIX)
        coalesce(destinations.destination, source.kafka_topic) as destination,
        source.kafka_topic,
        source.profile_id,
        source.device_id,
        source.type as event_type,
        source.event_name,
        source.event_ts,
        source.received_at,
        case when json_valid(source.consent) then source.consent end as consent,
        source.policy_version,
        source.kafka_partition,
        source.kafka_offset
    from source
    left join destinations on ends_with(source.kafka_topic, destinations.destination)
),

deduplicated as (
    select * from renamed
    where event_id is not null
    qualify row_number() over (
        partition by event_id, coalesce(device_id, ''), destination order by received_at, kafka_offset
    ) = 1
),

warehouse_ids as (
    -- an id two devices sent is two events: take the id stg_decided gave this device's event
    select sent_event_id, device_id, event_id from {{ ref('stg_decided') }}
    where event_id_reused
),

keyed as (
    select deduplicated.* replace (coalesce(warehouse_ids.event_id, deduplicated.event_id) as event_id)
    from deduplicated
    left join warehouse_ids
        on warehouse_ids.sent_event_id = deduplicated.event_id
       and warehouse_ids.device_id = deduplicated.device_id
),

final as (
    select
        event_id || ' -> ' || destination as delivery_id,
        *
    from keyed as deduplicated
    where not exists (
        select 1 from erased
        where erased.identifier_value in (deduplicated.profile_id, deduplicated.device_id)
    )
)

select * from final
