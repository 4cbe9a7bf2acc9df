-- The warehouse's profile for every decided event. A component's profile id is the hot path's current profile
-- id (last stamped) of the component's earliest-seen identifier that has one; otherwise the component id.
with

events as (
    select
        event_id,
        event_ts,
        profile_id as hot_profile_id,
        coalesce('anonymous:' || anonymous_id, 'user:' || user_id) as anchor_id
    from {{ ref('stg_decided') }}
),

components as (
    select * from {{ ref('int_identity_components') }}
),

anchored as (
    select events.*, components.component_id
    from events
    left join components on components.identifier_id = events.anchor_id
),

anchor_current_profile as (
    -- what the edge currently believes for each anchor identifier (device)
    select
        anchor_id,
        any_value(component_id) as component_id,
        arg_max(hot_profile_id, (event_ts, event_id)) filter (where hot_profile_id is not null) as current_hot_profile_id,
        min(event_ts) as first_seen_at
    from anchored
    group by anchor_id
),

component_profiles as (
    select
        component_id,
        coalesce(
            arg_min(current_hot_profile_id, (first_seen_at, anchor_id)) filter (where current_hot_profile_id is not null),
            component_id
        ) as profile_id
    from anchor_current_profile
    where component_id is not null
    group by component_id
),

final as (
    select
        anchored.event_id,
        anchored.anchor_id,
        anchored.component_id,
        anchored.hot_profile_id,
        coalesce(component_profiles.profile_id, anchored.hot_profile_id) as profile_id
    from anchored
    left join component_profiles on component_profiles.component_id = anchored.component_id
)

select * from final
