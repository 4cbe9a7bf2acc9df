-- One row per session (as the warehouse recomputes it, streaming/sessions.py definition): device, profile,
-- start/end, counts, conversion and revenue, what the hot path decided about bots, and the features at its end.
with

features as (
    select * from {{ ref('int_session_features') }}
),

events as (
    select
        event_id, profile_id, is_bot, bot_score, revenue, properties, policy_version
    from {{ ref('stg_decided') }}
),

profiles as (
    select event_id, profile_id as warehouse_profile_id from {{ ref('int_event_profiles') }}
),

joined as (
    select
        features.*,
        events.profile_id,
        events.is_bot,
        events.bot_score,
        events.policy_version,
        profiles.warehouse_profile_id,
        features.event_type = 'track' and features.event_name = 'Order Completed' as is_order,
        coalesce(
            events.revenue,
            try_cast(json_extract_string(events.properties, '$.revenue') as double),
            try_cast(json_extract_string(events.properties, '$.total') as double),
            0.0
        ) as event_revenue
    from features
    inner join events using (event_id)
    left join profiles using (event_id)
),

final as (
    select
        session_id,
        any_value(device_id) as device_id,
        arg_max(profile_id, session_event_number) filter (where profile_id is not null) as profile_id,
        arg_max(warehouse_profile_id, session_event_number) as warehouse_profile_id,
        min(session_start_ts) as session_start_ts,
        max(event_ts) as session_end_ts,
        cast(timezone('UTC', min(session_start_ts)) as date) as session_date,
        count(*) as event_count,
        count(*) filter (where stream = 'events') as delivered_events,
        count(*) filter (where stream = 'quarantine') as quarantined_events,
        count(*) filter (where stream = 'suppressed') as suppressed_events,
        count(*) filter (where is_order) as orders,
        coalesce(bool_or(is_order), false) as converted,
        coalesce(sum(event_revenue) filter (where is_order), 0.0) as revenue,
        coalesce(bool_or(coalesce(is_bot, false) or stream = 'quarantine'), false) as hot_is_bot,
        max(bot_score) as hot_max_bot_score,
        arg_min(policy_version, session_event_number) as first_policy_version,
        max(f_seconds_since_prev) as max_interval_s,
        {%- for feature in var('session_features') %}
        arg_max(f_{{ feature }}, session_event_number) as f_{{ feature }}{{ ',' if not loop.last }}
        {%- endfor %}
    from joined
    group by session_id
)

select * from final
