-- Session-so-far features at every decided event, recomputed over history: the SQL twin of
-- streaming/sessions.py (one definition, two engines; keep them in step). Per device, in arrival order
-- (raw_partition, raw_offset of events.raw):
--   * a session starts when the event time is more than session_gap_s after the running max of the device's
--     earlier event times (the running max never goes back, so it equals the hot path's last_ms);
--   * interval = greatest(0, t - previous running max), 0 at a session start;
--   * session_id = device_id || ':' || epoch ms of the session's first event.
-- f_<feature> are the warehouse's values; hot_f_<feature> / hot_session_id what the hot path stamped.
{%- set gap = var('session_gap_s') %}
with

decided as (
    select * from {{ ref('stg_events') }}
    union all by name
    select * from {{ ref('stg_suppressed') }}
),

renamed as (
    select
        event_id,
        stream,
        device_id,
        event_ts,
        event_date,
        event_type,
        event_name,
        raw_partition,
        raw_offset,
        received_at,
        session_id as hot_session_id,
        {{ feature_columns(prefix='hot_f_', source_prefix='f_') }},
        epoch_ms(event_ts) as ts_ms,
        case when json_valid(properties) then properties end as properties
    from decided
    where device_id is not null
      and event_ts is not null
),

parsed as (
    select
        *,
        -- streaming.sessions._num: finite JSON numbers only (not booleans, not numeric strings), else 0
        case when json_type(properties, '$.price') in ('BIGINT', 'UBIGINT', 'HUGEINT', 'DOUBLE')
             then cast(json_extract(properties, '$.price') as double) else 0.0 end as price_num,
        case when json_type(properties, '$.quantity') in ('BIGINT', 'UBIGINT', 'HUGEINT', 'DOUBLE')
             then cast(json_extract(properties, '$.quantity') as double) else 0.0 end as quantity_num,
        case when json_type(properties, '$.category') = 'VARCHAR'
             then nullif(json_extract_string(properties, '$.category'), '') end as category
    from renamed
),

sequenced as (
    select
        *,
        row_number() over w_device as device_seq,
        max(ts_ms) over (w_device rows between unbounded preceding and 1 preceding) as prev_max_ms
    from parsed
    window w_device as (
        partition by device_id
        order by raw_partition nulls last, raw_offset nulls last, received_at, event_id
    )
),

boundaries as (
    select
        *,
        prev_max_ms is null or cast(ts_ms - prev_max_ms as double) / 1000 > {{ gap }} as is_session_start
    from sequenced
),

intervals as (
    select
        *,
        case when is_session_start then 0.0
             else greatest(0.0, cast(ts_ms - prev_max_ms as double) / 1000) end as interval_s,
        count(*) filter (where is_session_start) over (
            partition by device_id order by device_seq rows between unbounded preceding and current row
        ) as device_session_number
    from boundaries
),

running as (
    select
        *,
        first_value(ts_ms) over w_session as session_start_ms,
        max(ts_ms) over w_session as session_last_ms,
        row_number() over w_session as session_event_number,
        sum(interval_s) over w_session as sum_interval_s,
        sum(interval_s * interval_s) over w_session as sum_sq_interval_s,
        coalesce(min(case when not is_session_start then interval_s end) over w_session, 0.0) as min_interval_s,
        sum(case when event_type = 'page' then 1 else 0 end) over w_session as page_views,
        sum(case when event_type = 'track' and event_name = 'Product Viewed' then 1 else 0 end)
            over w_session as product_views,
        sum(case when event_type = 'track' and event_name = 'Product Added' then 1 else 0 end)
            over w_session as cart_adds,
        sum(case when event_type = 'track' and event_name = 'Product Added'
                 then price_num * (case when quantity_num = 0 then 1.0 else quantity_num end)
                 else 0.0 end) over w_session as cart_value,
        count(distinct category) over w_session as distinct_categories
    from intervals
    window w_session as (
        partition by device_id, device_session_number
        order by device_seq
        rows between unbounded preceding and current row
    )
),

moments as (
    select
        *,
        cast(session_event_number - 1 as double) as n_intervals,
        cast(session_last_ms - session_start_ms as double) / 1000 as duration_s,
        case when session_event_number > 1
             then sum_interval_s / (session_event_number - 1) else 0.0 end as mean_interval_s
    from running
),

variances as (
    select
        *,
        case when n_intervals > 0
             then sum_sq_interval_s / n_intervals - mean_interval_s * mean_interval_s else 0.0 end as var_interval
    from moments
),

final as (
    select
        event_id,
        device_id || ':' || cast(session_start_ms as varchar) as session_id,
        device_id,
        stream,
        event_ts,
        event_date,
        event_type,
        event_name,
        device_seq,
        device_session_number,
        session_event_number,
        is_session_start,
        timezone('UTC', epoch_ms(session_start_ms)) as session_start_ts,
        cast(session_event_number as double) as f_session_event_count,
        duration_s as f_session_duration_s,
        interval_s as f_seconds_since_prev,
        mean_interval_s as f_mean_interval_s,
        case when var_interval > 0 then sqrt(var_interval) else 0.0 end as f_interval_std_s,
        min_interval_s as f_min_interval_s,
        cast(session_event_number as double) * 60 / greatest(duration_s, 1.0) as f_events_per_minute,
        cast(page_views as double) as f_page_views,
        cast(product_views as double) as f_product_views,
        cast(cart_adds as double) as f_cart_adds,
        round(cart_value, 6) as f_cart_value,
        cast(distinct_categories as double) as f_distinct_categories,
        hot_session_id,
        {{ feature_columns(prefix='hot_f_') }}
    from variances
)

select * from final
