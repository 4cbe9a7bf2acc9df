-- What the delivery tier did with each routed event, per destination (lake stream `delivery_outcomes`): one row
-- per outcome record (an event retried three times and delivered has four). Empty until delivery runs. Erased
-- profiles removed. The destination's routed topic may carry the installation's prefix.
with

source as (
    {{ lake_relation('delivery_outcomes') }}
),

erased as (
    select identifier_value from {{ ref('stg_erased_identifiers') }}
),

final as (
    select
        event_id,
        destination,
        routed_topic,
        profile_id,
        event_ts,
        cast(timezone('UTC', event_ts) as date) as event_date,
        status,
        attempt,
        lane,
        http_status,
        reason,
        "at" as outcome_at,
        kafka_partition,
        kafka_offset
    from source
    where event_id is not null
      and not exists (select 1 from erased where erased.identifier_value = source.profile_id)
)

select * from final
