-- One row per warehouse profile (identity graph): activity from events delivered to the warehouse (analytics
-- consent), orders, and recency / frequency / monetary / T (int_customer_rfm; null without a purchase).
with

events as (
    select * from {{ ref('stg_events') }}
    where stream = 'events'
),

event_profiles as (
    select event_id, profile_id from {{ ref('int_event_profiles') }}
),

features as (
    select event_id, session_id from {{ ref('int_session_features') }}
),

rfm as (
    select * from {{ ref('int_customer_rfm') }}
),

activity as (
    select
        event_profiles.profile_id,
        count(*) as events,
        count(distinct features.session_id) as sessions,
        count(distinct events.device_id) as devices,
        min(events.event_ts) as first_seen_at,
        max(events.event_ts) as last_seen_at,
        arg_max(events.country, events.event_ts) as last_country
    from events
    inner join event_profiles using (event_id)
    left join features using (event_id)
    group by event_profiles.profile_id
),

final as (
    select
        activity.profile_id,
        activity.events,
        activity.sessions,
        activity.devices,
        activity.first_seen_at,
        activity.last_seen_at,
        activity.last_country,
        rfm.profile_id is not null as is_customer,
        coalesce(rfm.orders, 0) as orders,
        coalesce(rfm.total_revenue, 0.0) as total_revenue,
        rfm.first_purchase_date,
        rfm.last_purchase_date,
        rfm.frequency,
        rfm.recency_days,
        rfm.t_days,
        rfm.monetary_value,
        rfm.as_of_date
    from activity
    left join rfm using (profile_id)
)

select * from final
