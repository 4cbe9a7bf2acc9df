{{ config(
    materialized='incremental',
    unique_key='event_id',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    pre_hook="{{ erasure_reset() }}",
    post_hook=["{{ session_features_drop_moved() }}",
               "{{ lake_mark_consumed('int_session_features', after='stg_decided') }}",
               "{{ erasure_remember() }}"]
) }}
-- Session-so-far features at every decided event, recomputed over history: the SQL twin of
-- streaming/sessions.py (one definition, two engines; keep them in step). Per device, in arrival order
-- (raw_partition, raw_offset of events.raw):
--   * a session starts when the event time is more than session_gap_s after the running max of the device's
--     earlier event times (the running max never goes back, so it equals the hot path's last_ms);
--   * interval = greatest(0, t - previous running max), 0 at a session start;
--   * session_id = device_id || ':' || epoch ms of the session's first event;
--   * only live events (received within live_lag_s of their event time) make sessions: an import, a backfill or a
--     replay is a session of its own (count 1, no interval) and never feeds the live session's rate or rhythm.
-- f_<feature> are the warehouse's values; hot_f_<feature> / hot_session_id what the hot path stamped.
-- Incremental by device: the features are a function of a device's arrival-ordered history. A run touches only
-- the devices with a row in the lake files stg_decided merged since this model's last run (new events, late
-- events of old days, duplicates, sessions across midnight). A device whose new rows all come after its kept
-- rows in arrival order is recomputed from its last session's first event on; a device with a re-delivered or
-- out-of-order event is recomputed whole. Rows are replaced by event_id (delete+insert); the definition (the
-- CTEs from `renamed` on) is the full build's. When the erased identifiers change, everything is rebuilt.
-- depends_on: {{ ref('stg_lake_files') }} {{ ref('stg_decided') }}
{%- set gap = var('session_gap_s') %}
{%- set live_lag = var('live_lag_s') %}
{%- set incremental = is_incremental() and not erasure_changed() %}
with

{%- if incremental %}
{%- set files = lake_pending_files('int_session_features', after='stg_decided') %}

touched as (
    -- rows of the files stg_decided merged since this model's last run (winners or not)
    select event_id, device_id from ({{ lake_decided_rows(files=files) }})
),

rewritten_devices as (
    -- devices already holding an event id delivered again: the kept row may change or move, recompute them whole
    select distinct device_id from {{ this }} where event_id in (select event_id from touched)
),

affected_devices as (
    select device_id from touched where device_id is not null
    union
    select device_id from rewritten_devices
),

candidates as (
    select * from (
        select * from {{ ref('stg_events') }}
        union all by name
        select * from {{ ref('stg_suppressed') }}
    )
    where device_id in (select device_id from affected_devices)
),

kept as (
    select event_id, device_id, device_seq, device_session_number, is_session_start, is_live from {{ this }}
    where device_id in (select device_id from affected_devices)
),

last_kept as (
    select last.device_id, decided.raw_partition, decided.raw_offset
    from (select device_id, arg_max(event_id, device_seq) as event_id from kept group by device_id) as last
    inner join {{ ref('stg_decided') }} as decided using (event_id)
),

out_of_order_devices as (
    -- a new row that does not come after the device's last kept row in arrival order changes earlier features
    select distinct candidates.device_id
    from candidates
    inner join last_kept using (device_id)
    where candidates.event_id not in (select event_id from kept)
      and not coalesce(candidates.raw_partition = last_kept.raw_partition
                       and candidates.raw_offset > last_kept.raw_offset, false)
),

resume_points as (
    -- devices that only got new rows at the end resume at their last session's first event: nothing before it
    -- can change, and a session start lies more than the gap after every earlier event time, so the running
    -- max restarted there is exact
    select device_id, max(device_seq) as device_seq, max(device_session_number) as device_session_number
    from kept
    where is_session_start and is_live
      and device_id not in (select device_id from rewritten_devices)
      and device_id not in (select device_id from out_of_order_devices)
    group by device_id
),

decided as (
    select
        candidates.*,
        coalesce(resume_points.device_seq, 1) - 1 as seq_offset,
        coalesce(resume_points.device_session_number, 1) - 1 as session_offset
    from candidates
    left join resume_points using (device_id)
    left join kept on kept.event_id = candidates.event_id
    where resume_points.device_id is null
       or kept.event_id is null
       or kept.device_seq >= resume_points.device_seq
),
{%- else %}

decided as (
    select *, 0 as seq_offset, 0 as session_offset from (
        select * from {{ ref('stg_events') }}
        union all by name
        select * from {{ ref('stg_suppressed') }}
    )
),
{%- endif %}

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
        seq_offset,
        session_offset,
        session_id as hot_session_id,
        {{ feature_columns(prefix='hot_f_', source_prefix='f_') }},
        -- whole milliseconds, truncated as streaming.decided.epoch_ms does (DuckDB's epoch_ms rounds a
        -- microsecond timestamp to the nearest millisecond: one session id a millisecond apart)
        epoch_us(event_ts) // 1000 as ts_ms,
        -- streaming.sessions.is_live: received within live_lag_s of the event time
        coalesce(epoch_us(received_at) // 1000 - epoch_us(event_ts) // 1000 <= {{ live_lag }} * 1000, true)
            as is_live,
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
        row_number() over w_device + seq_offset as device_seq,
        -- the running max of the device's earlier live event times
        max(case when is_live then ts_ms end) over (w_device rows between unbounded preceding and 1 preceding)
            as prev_max_ms
    from parsed
    window w_device as (
        partition by device_id
        order by raw_partition nulls last, raw_offset nulls last, received_at, event_id
    )
),

boundaries as (
    select
        *,
        not is_live or prev_max_ms is null or cast(ts_ms - prev_max_ms as double) / 1000 > {{ gap }}
            as is_session_start
    from sequenced
),

intervals as (
    select
        *,
        case when is_session_start then 0.0
             else greatest(0.0, cast(ts_ms - prev_max_ms as double) / 1000) end as interval_s,
        count(*) filter (where is_session_start and is_live) over (
            partition by device_id order by device_seq rows between unbounded preceding and current row
        ) + session_offset as device_session_number
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
        -- an event that is not live is its own session (keyed apart from every live session number)
        partition by device_id, case when is_live then device_session_number else -device_seq end
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
        is_live,
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
