-- The learning tier's training set: one row per decided (non-DLQ) event with the session-so-far features as the
-- warehouse recomputes them (what the first mile can know at that instant) and labels from hindsight:
--   label_converted: the session has an 'Order Completed' at or after this event (arrival order)
--   label_bot:       bot_labels.label_bot of the event's session
--   label_settled:   the session ended long enough ago for its hindsight labels to be judged
with

features as (
    select * from {{ ref('int_session_features') }}
),

events as (
    select * from {{ ref('stg_decided') }}
),

profiles as (
    select event_id, profile_id as warehouse_profile_id from {{ ref('int_event_profiles') }}
),

bot_labels as (
    select session_id, label_bot, label_bot_behaviour, label_settled from {{ ref('bot_labels') }}
),

outcomes as (
    select
        *,
        max(case when event_type = 'track' and event_name = 'Order Completed' then session_event_number end)
            over (partition by session_id) as last_order_number
    from features
),

final as (
    select
        outcomes.event_id,
        outcomes.event_date,
        outcomes.event_ts,
        outcomes.session_id,
        outcomes.device_id,
        events.profile_id,
        profiles.warehouse_profile_id,
        events.user_agent,
        events.asn,
        events.country,
        events.browser,
        events.os,
        events.device_type,
        events.policy_version,
        outcomes.stream,
        outcomes.event_type,
        outcomes.event_name,
        coalesce(events.is_bot, false) or outcomes.stream = 'quarantine' as is_bot,
        events.bot_score,
        events.score,
        outcomes.session_event_number,
        {{ feature_columns(prefix='f_', relation_alias='outcomes') }},
        coalesce(outcomes.last_order_number >= outcomes.session_event_number, false) as label_converted,
        bot_labels.label_bot,
        bot_labels.label_bot_behaviour,
        coalesce(bot_labels.label_settled, false) as label_settled
    from outcomes
    inner join events using (event_id)
    left join profiles using (event_id)
    left join bot_labels on bot_labels.session_id = outcomes.session_id
)

select * from final
