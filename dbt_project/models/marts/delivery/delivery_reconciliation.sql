-- Per destination and event day: every event routed to the destination's topic is delivered, retrying,
-- dead-lettered, withheld or still in flight (routed, no outcome yet) — exactly (the model's tests fail the build
-- otherwise). An event's state is its latest outcome (a dead letter replayed and delivered counts as delivered).
-- Destinations are those with an outcome in the lake (the delivery tier's destinations file is not the
-- warehouse's to read); their routed topic is the one their outcomes name.
with

outcomes as (
    select * from {{ ref('stg_delivery_outcomes') }}
),

destinations as (
    select destination, any_value(routed_topic) as routed_topic from outcomes group by destination
),

routed as (
    -- what the hot path routed to each topic (one row per event and topic)
    select distinct deliveries.event_id, deliveries.kafka_topic as routed_topic,
           cast(timezone('UTC', deliveries.event_ts) as date) as event_date
    from {{ ref('stg_deliveries') }} as deliveries
),

expected as (
    select destinations.destination, routed.event_id, routed.event_date
    from routed
    inner join destinations on ends_with(routed.routed_topic, destinations.routed_topic)
),

latest as (
    select destination, event_id, arg_max(status, (outcome_at, attempt, kafka_offset)) as status,
           any_value(event_date) as event_date
    from outcomes
    group by destination, event_id
),

states as (
    select
        coalesce(expected.destination, latest.destination) as destination,
        coalesce(expected.event_date, latest.event_date) as event_date,
        expected.event_id is not null as was_routed,
        coalesce(latest.status, 'in_flight') as state
    from expected
    full outer join latest using (destination, event_id)
),

final as (
    select
        destination || ' ' || cast(event_date as varchar) as reconciliation_id,
        destination,
        event_date,
        count(*) filter (where was_routed) as routed,
        count(*) filter (where was_routed and state = 'delivered') as delivered,
        count(*) filter (where was_routed and state = 'retrying') as retrying,
        count(*) filter (where was_routed and state = 'dead_lettered') as dead_lettered,
        count(*) filter (where was_routed and state = 'withheld') as withheld,
        count(*) filter (where was_routed and state = 'in_flight') as in_flight,
        -- an outcome for an event the lake never saw routed: the accounting is broken somewhere
        count(*) filter (where not was_routed) as unaccounted
    from states
    group by destination, event_date
)

select * from final
