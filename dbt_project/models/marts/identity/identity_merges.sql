-- Merges the edge did not know: devices (anchor identifiers) the warehouse links into one profile whose current
-- hot-path profile id differs from the profile's. The hot path applies each row as from_profile_id → to_profile_id
-- (control.identity, published by the loop's published_control asset), and folds `consent` into the survivor:
-- the merged profile's latest explicit decision per purpose, {purpose: [granted, decided_at epoch ms]}
-- (int_consent_decisions), so that a merge never widens consent.
with

event_profiles as (
    select ep.*, e.event_ts
    from {{ ref('int_event_profiles') }} as ep
    inner join {{ ref('stg_decided') }} as e using (event_id)
),

anchors as (
    select
        anchor_id,
        any_value(component_id) as component_id,
        any_value(profile_id) as to_profile_id,
        arg_max(hot_profile_id, (event_ts, event_id)) filter (where hot_profile_id is not null) as from_profile_id,
        min(event_ts) as first_seen_at,
        max(event_ts) as last_seen_at
    from event_profiles
    -- suppressed records of old lakes carry no identifiers; an anchor outside every component merges nothing
    where anchor_id is not null and component_id is not null
    group by anchor_id
),

consent as (
    select
        profile_id,
        cast(json_group_object(purpose, json_array(granted, epoch_ms(decided_at))) as varchar) as consent
    from {{ ref('int_consent_decisions') }}
    group by profile_id
),

merges as (
    select
        from_profile_id || ' -> ' || to_profile_id as merge_id,
        from_profile_id,
        to_profile_id,
        any_value(component_id) as component_id,
        array_to_string(list_sort(list(anchor_id)), ',') as anchor_ids,
        min(first_seen_at) as first_seen_at,
        max(last_seen_at) as last_seen_at
    from anchors
    where from_profile_id is not null
      and from_profile_id <> to_profile_id
    group by from_profile_id, to_profile_id
),

final as (
    select
        merges.*,
        coalesce(consent.consent, '{}') as consent
    from merges
    left join consent on consent.profile_id = merges.from_profile_id
)

select * from final
