-- Bot labels in hindsight, per session, from behaviour over the whole session and the device's day, beside the
-- hot path's decision. Thresholds are vars (dbt_project.yml: bot_*).
--   regular_intervals: >= bot_min_events events and interval coefficient of variation < bot_regular_cv_max
--   high_rate:         >= bot_min_events events and > bot_high_rate_per_minute events per minute
--   no_dwell:          >= bot_no_dwell_min_pages page views and never more than bot_no_dwell_max_interval_s apart
--   many_sessions:     the device started >= bot_sessions_per_device_day sessions that UTC day
--   hot_path_quarantined: the first mile quarantined (or flagged) an event of the session
-- Over the whole history (what the first mile cannot see when it decides):
--   cart_hoarding:     the session put every product it viewed in the cart, >= bot_hoard_min_units units each,
--                      and neither it nor its profile (identity-resolved, any device, any day) ever bought
--   sku_sweep:         a session that never bought and put >= bot_hoard_min_units units of a product in the cart
--                      that >= bot_sweep_min_devices distinct never-buying devices hoarded the same UTC day
--                      (inventory-like sweeps by rotating devices: each device alone looks like a shopper)
--   ua_rotation:       a session that never bought from a network prefix (/24, /48) where
--                      >= bot_prefix_min_user_agents distinct user agents started never-buying sessions within
--                      one hour
-- "Never bought" is only judged once a session is settled: its last event lies bot_label_settle_s before the
-- newest event in the warehouse (label_settled). The learning tier does not mine unsettled sessions.
-- label_bot_behaviour uses behaviour only (compare it with the hot path); label_bot adds the hot path's verdict.
with

sessions as (
    select * from {{ ref('sessions') }}
),

newest as (
    select max(session_end_ts) as newest_ts from sessions
),

buyers as (
    -- profiles (as the identity graph resolves them) and devices that ever ordered, over all history
    select warehouse_profile_id as id from sessions where orders > 0 and warehouse_profile_id is not null
    union
    select device_id from sessions where orders > 0
),

session_events as (
    select features.session_id, features.event_name, events.properties, events.ip_prefix, events.user_agent,
           features.event_ts
    from {{ ref('int_session_features') }} as features
    inner join {{ ref('stg_decided') }} as events using (event_id)
    where features.event_type = 'track' or events.ip_prefix is not null
),

cart_lines as (
    select
        session_id,
        coalesce(json_extract_string(properties, '$.sku'), json_extract_string(properties, '$.product_id')) as sku,
        coalesce(try_cast(json_extract(properties, '$.quantity') as double), 1.0) as units
    from session_events
    where event_name = 'Product Added'
),

carts as (
    select session_id, count(*) as cart_adds, sum(units) as cart_units, min(units) as min_units
    from cart_lines
    group by session_id
),

judged as (
    -- sessions whose "never bought" can be judged: settled, and no order by the session, its device or profile
    select
        sessions.session_id,
        sessions.session_end_ts <= newest.newest_ts - to_seconds({{ var('bot_label_settle_s') }})
            as label_settled,
        sessions.orders = 0
            and not coalesce(sessions.warehouse_profile_id in (select id from buyers), false)
            and sessions.device_id not in (select id from buyers)
            as never_bought
    from sessions
    cross join newest
),

hoard_lines as (
    select cart_lines.session_id, cart_lines.sku, sessions.device_id, sessions.session_date
    from cart_lines
    inner join judged using (session_id)
    inner join sessions using (session_id)
    where judged.never_bought and judged.label_settled and cart_lines.units >= {{ var('bot_hoard_min_units') }}
),

swept_skus as (
    select sku, session_date
    from hoard_lines
    group by sku, session_date
    having count(distinct device_id) >= {{ var('bot_sweep_min_devices') }}
),

sweeps as (
    select hoard_lines.session_id, string_agg(distinct hoard_lines.sku, ',' order by hoard_lines.sku) as swept_skus
    from hoard_lines
    inner join swept_skus using (sku, session_date)
    group by hoard_lines.session_id
),

prefix_sessions as (
    -- never-buying settled sessions per network prefix and hour, with their user agents
    select session_events.session_id, any_value(session_events.ip_prefix) as ip_prefix,
           any_value(session_events.user_agent) as user_agent,
           date_trunc('hour', min(session_events.event_ts)) as started_hour
    from session_events
    inner join judged using (session_id)
    where judged.never_bought and judged.label_settled and session_events.ip_prefix is not null
    group by session_events.session_id
),

rotating_prefixes as (
    select ip_prefix, started_hour, count(distinct user_agent) as prefix_user_agents
    from prefix_sessions
    group by ip_prefix, started_hour
    having count(distinct user_agent) >= {{ var('bot_prefix_min_user_agents') }}
),

rotations as (
    select prefix_sessions.session_id, rotating_prefixes.prefix_user_agents
    from prefix_sessions
    inner join rotating_prefixes using (ip_prefix, started_hour)
),

device_days as (
    select device_id, session_date, count(*) as device_day_sessions
    from sessions
    group by device_id, session_date
),

signals as (
    select
        sessions.session_id,
        sessions.device_id,
        sessions.profile_id,
        sessions.session_date,
        sessions.event_count,
        sessions.f_mean_interval_s as mean_interval_s,
        sessions.f_interval_std_s as interval_std_s,
        case when sessions.f_mean_interval_s > 0
             then sessions.f_interval_std_s / sessions.f_mean_interval_s end as interval_cv,
        sessions.f_events_per_minute as events_per_minute,
        sessions.max_interval_s,
        device_days.device_day_sessions,
        sessions.hot_is_bot as hot_path_is_bot,
        sessions.event_count >= {{ var('bot_min_events') }}
            and sessions.f_mean_interval_s > 0
            and sessions.f_interval_std_s / sessions.f_mean_interval_s < {{ var('bot_regular_cv_max') }}
            as regular_intervals,
        sessions.event_count >= {{ var('bot_min_events') }}
            and sessions.f_events_per_minute > {{ var('bot_high_rate_per_minute') }}
            as high_rate,
        sessions.f_page_views >= {{ var('bot_no_dwell_min_pages') }}
            and sessions.max_interval_s < {{ var('bot_no_dwell_max_interval_s') }}
            as no_dwell,
        device_days.device_day_sessions >= {{ var('bot_sessions_per_device_day') }} as many_sessions,
        coalesce(judged.label_settled, false) as label_settled,
        coalesce(carts.cart_adds, 0) as cart_adds,
        coalesce(carts.cart_units, 0.0) as cart_units,
        coalesce(judged.never_bought and judged.label_settled and carts.cart_adds >= 1
                 and carts.min_units >= {{ var('bot_hoard_min_units') }}
                 and carts.cart_adds >= sessions.f_product_views, false) as cart_hoarding,
        sweeps.swept_skus is not null as sku_sweep,
        sweeps.swept_skus,
        rotations.session_id is not null as ua_rotation,
        rotations.prefix_user_agents,
        sessions.hot_is_bot as hot_path_quarantined
    from sessions
    inner join device_days using (device_id, session_date)
    left join judged using (session_id)
    left join carts using (session_id)
    left join sweeps using (session_id)
    left join rotations using (session_id)
),

flagged as (
    select
        *,
        regular_intervals or high_rate or no_dwell or many_sessions or cart_hoarding or sku_sweep or ua_rotation
            as behaviour
    from signals
),

final as (
    select
        session_id,
        device_id,
        profile_id,
        session_date,
        event_count,
        mean_interval_s,
        interval_std_s,
        interval_cv,
        events_per_minute,
        max_interval_s,
        device_day_sessions,
        regular_intervals,
        high_rate,
        no_dwell,
        many_sessions,
        cart_hoarding,
        sku_sweep,
        ua_rotation,
        label_settled,
        cart_adds,
        cart_units,
        swept_skus,
        prefix_user_agents,
        hot_path_quarantined,
        behaviour as label_bot_behaviour,
        behaviour or hot_path_quarantined as label_bot,
        concat_ws(',',
            case when regular_intervals then 'regular_intervals' end,
            case when high_rate then 'high_rate' end,
            case when no_dwell then 'no_dwell' end,
            case when many_sessions then 'many_sessions' end,
            case when cart_hoarding then 'cart_hoarding' end,
            case when sku_sweep then 'sku_sweep' end,
            case when ua_rotation then 'ua_rotation' end,
            case when hot_path_quarantined then 'hot_path_quarantined' end
        ) as label_reasons,
        hot_path_is_bot,
        case
            when hot_path_is_bot and behaviour then 'both'
            when hot_path_is_bot then 'hot_path_only'
            when behaviour then 'hindsight_only'
            else 'neither'
        end as comparison
    from flagged
)

select * from final
