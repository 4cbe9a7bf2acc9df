-- Bot labels in hindsight, per session, from behaviour over the whole session and the device's day, beside the
-- hot path's decision. Thresholds are vars (dbt_project.yml: bot_*).
--   regular_intervals: >= bot_min_events events and interval coefficient of variation < bot_regular_cv_max
--   high_rate:         >= bot_min_events events and > bot_high_rate_per_minute events per minute
--   no_dwell:          >= bot_no_dwell_min_pages page views and never more than bot_no_dwell_max_interval_s apart
--   many_sessions:     the device started >= bot_sessions_per_device_day sessions that UTC day
--   hot_path_quarantined: the first mile quarantined (or flagged) an event of the session
-- label_bot_behaviour uses behaviour only (compare it with the hot path); label_bot adds the hot path's verdict.
with

sessions as (
    select * from {{ ref('sessions') }}
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
        sessions.hot_is_bot as hot_path_quarantined
    from sessions
    inner join device_days using (device_id, session_date)
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
        hot_path_quarantined,
        regular_intervals or high_rate or no_dwell or many_sessions as label_bot_behaviour,
        regular_intervals or high_rate or no_dwell or many_sessions or hot_path_quarantined as label_bot,
        concat_ws(',',
            case when regular_intervals then 'regular_intervals' end,
            case when high_rate then 'high_rate' end,
            case when no_dwell then 'no_dwell' end,
            case when many_sessions then 'many_sessions' end,
            case when hot_path_quarantined then 'hot_path_quarantined' end
        ) as label_reasons,
        hot_path_is_bot,
        case
            when hot_path_is_bot and (regular_intervals or high_rate or no_dwell or many_sessions) then 'both'
            when hot_path_is_bot then 'hot_path_only'
            when regular_intervals or high_rate or no_dwell or many_sessions then 'hindsight_only'
            else 'neither'
        end as comparison
    from signals
)

select * from final
