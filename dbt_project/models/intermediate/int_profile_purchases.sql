-- Purchases per warehouse profile and UTC day ('Order Completed' events delivered to the warehouse, i.e. with
-- analytics consent). Several orders on one day are one purchase day (lifetimes' summary_data convention).
with

events as (
    select * from {{ ref('stg_events') }}
    where stream = 'events'
      and event_type = 'track'
      and event_name = 'Order Completed'
),

profiles as (
    select event_id, profile_id from {{ ref('int_event_profiles') }}
),

orders as (
    select
        profiles.profile_id,
        events.event_date as purchase_date,
        -- the hot path's `revenue` fact as it stamped it (streaming/facts.py: revenue, else total, else value;
        -- numbers only): one definition, not a second reading of the properties here
        coalesce(events.revenue, 0.0) as revenue
    from events
    inner join profiles using (event_id)
),

final as (
    select
        profile_id || ':' || cast(purchase_date as varchar) as purchase_day_id,
        profile_id,
        purchase_date,
        count(*) as orders,
        sum(revenue) as revenue
    from orders
    group by profile_id, purchase_date
)

select * from final
