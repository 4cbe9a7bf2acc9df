-- Every identifier (anonymous id, user id, hashed email) with the profile the warehouse links it to over the
-- full history (connected components), and the profile ids the hot path stamped on its events.
with

components as (
    select * from {{ ref('int_identity_components') }}
),

event_profiles as (
    select * from {{ ref('int_event_profiles') }}
),

component_profiles as (
    select component_id, any_value(profile_id) as profile_id
    from event_profiles
    where component_id is not null
    group by component_id
),

edges as (
    select from_id as identifier_id, first_seen_at, last_seen_at, n_events from {{ ref('int_identity_edges') }}
    union all
    select to_id, first_seen_at, last_seen_at, 0 from {{ ref('int_identity_edges') }} where to_id <> from_id
),

seen as (
    select identifier_id, min(first_seen_at) as first_seen_at, max(last_seen_at) as last_seen_at,
           sum(n_events) as anchored_events
    from edges
    group by identifier_id
),

hot as (
    select anchor_id as identifier_id,
           array_to_string(list_sort(list_distinct(list(hot_profile_id))), ',') as hot_profile_ids
    from event_profiles
    group by anchor_id
),

final as (
    select
        components.identifier_id,
        components.identifier_type,
        components.identifier_value,
        coalesce(component_profiles.profile_id, components.component_id) as profile_id,
        components.component_id,
        hot.hot_profile_ids,
        cast(seen.anchored_events as bigint) as anchored_events,
        seen.first_seen_at,
        seen.last_seen_at
    from components
    left join component_profiles using (component_id)
    left join seen using (identifier_id)
    left join hot using (identifier_id)
)

select * from final
