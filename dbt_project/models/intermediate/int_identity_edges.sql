-- Identity links observed on decided events: the event's anchor identifier (anonymous id, else user id) to each
-- other identifier it carries (user id, hashed email, alias previous id). A self-link keeps lone identifiers.
with

events as (
    select * from {{ ref('stg_decided') }}
),

identified as (
    select
        event_id,
        event_ts,
        profile_id as hot_profile_id,
        coalesce('anonymous:' || anonymous_id, 'user:' || user_id) as anchor_id,
        'user:' || user_id as user_node,
        'email_hash:' || email_hash as email_node,
        'anonymous:' || previous_id as previous_node
    from events
    where anonymous_id is not null or user_id is not null
),

links as (
    select anchor_id as from_id, anchor_id as to_id, event_ts, hot_profile_id from identified
    union all
    select anchor_id, user_node, event_ts, hot_profile_id from identified where user_node is not null
    union all
    select anchor_id, email_node, event_ts, hot_profile_id from identified where email_node is not null
    union all
    select anchor_id, previous_node, event_ts, hot_profile_id from identified where previous_node is not null
),

final as (
    select
        from_id || ' -> ' || to_id as edge_id,
        from_id,
        to_id,
        count(*) as n_events,
        min(event_ts) as first_seen_at,
        max(event_ts) as last_seen_at
    from links
    group by from_id, to_id
)

select * from final
