-- Consent audit per path and destination: events delivered while the destination's required purpose was not
-- granted at that instant (the `consent` column the hot path stamps: purposes granted right then).
-- Deliveries come from the `deliveries` stream and the decided events' `destinations` column (union, deduped).
--   first_mile:     what the hot path actually delivered (`destinations`); must be 0 (tested).
--   nightly_batch:  the same traffic as a batch architecture handles it: consent applied from the state known at the
--                   last nightly run (the profile's last stamped consent before the event's UTC day; none known =
--                   delivered, as batch loads do not hold data back), to every destination that state allowed.
with

destination_purposes as (
    select * from {{ ref('destination_purposes') }}
),

events as (
    select
        event_id,
        stream,
        coalesce(profile_id, device_id) as consent_key,
        event_ts,
        date_trunc('day', timezone('UTC', event_ts)) as event_day_start,
        case when json_valid(consent) then consent end as consent,
        case when json_valid(destinations) then destinations end as destinations
    from {{ ref('stg_decided') }}
),

stamped_deliveries as (
    -- decided events name their destinations; the deliveries stream records each delivery with its consent
    select
        events.event_id,
        events.consent,
        unnest(coalesce(json_extract_string(events.destinations, '$[*]'), [])) as destination
    from events
),

first_mile_deliveries as (
    select
        coalesce(deliveries.event_id, stamped.event_id) as event_id,
        coalesce(deliveries.destination, stamped.destination) as destination,
        coalesce(deliveries.consent, stamped.consent) as consent
    from {{ ref('stg_deliveries') }} as deliveries
    full outer join stamped_deliveries as stamped
        on stamped.event_id = deliveries.event_id
        and stamped.destination = deliveries.destination
),

first_mile as (
    select
        'first_mile' as path,
        deliveries.destination,
        destination_purposes.purpose,
        deliveries.event_id,
        coalesce(json_extract_string(deliveries.consent, '$.' || destination_purposes.purpose) = 'true', false)
            as granted_at_event
    from first_mile_deliveries as deliveries
    inner join destination_purposes using (destination)
),

consent_states as (
    select consent_key, timezone('UTC', event_ts) as state_ts, consent as state_consent
    from events
    where consent is not null
),

batch_candidates as (
    -- a batch pipeline sees every event that is not a bot (delivered or suppressed at the edge); ASOF: the last
    -- consent state stamped before the event's UTC day began
    select
        events.*,
        consent_states.state_consent as nightly_consent
    from events
    asof left join consent_states
        on events.consent_key = consent_states.consent_key
        and events.event_day_start > consent_states.state_ts
    where events.stream in ('events', 'suppressed')
),

nightly_batch as (
    select
        'nightly_batch' as path,
        destination_purposes.destination,
        destination_purposes.purpose,
        batch_candidates.event_id,
        coalesce(json_extract_string(batch_candidates.consent, '$.' || destination_purposes.purpose) = 'true', false)
            as granted_at_event
    from batch_candidates
    cross join destination_purposes
    where batch_candidates.nightly_consent is null
       or json_extract_string(batch_candidates.nightly_consent, '$.' || destination_purposes.purpose) = 'true'
),

deliveries as (
    select * from first_mile
    union all
    select * from nightly_batch
),

paths as (
    select path, destination, purpose
    from (values ('first_mile'), ('nightly_batch')) as p(path)
    cross join destination_purposes
),

final as (
    select
        paths.path || ':' || paths.destination || ':' || paths.purpose as audit_id,
        paths.path,
        paths.destination,
        paths.purpose,
        count(deliveries.event_id) as events_delivered,
        count(deliveries.event_id) filter (where not deliveries.granted_at_event) as delivered_without_consent
    from paths
    left join deliveries using (path, destination, purpose)
    group by paths.path, paths.destination, paths.purpose
)

select * from final
