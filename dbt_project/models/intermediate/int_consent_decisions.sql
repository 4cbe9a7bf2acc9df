-- The latest explicit consent decision per hot-path profile and purpose: what a merge carries to the edge
-- (identity_merges.consent → control.identity; the edge folds it into the survivor: latest wins, a denial wins a tie).
--
-- Where the warehouse sees a decision (every decided stream, deduplicated: stg_decided):
--   * the ledger's consent_changed: the purposes a delivered event's decision changed on its profile (a consent
--     event, a TCF string, decisions a device made anonymously and carried when it linked). The value is the
--     event's stamped consent for that purpose (`consent`: what was granted right after the decision);
--   * a flip of the stamped consent between two consecutive events of the profile: the decisions no destination
--     received. A revocation suppresses its own event, and a stage-2 suppression ledger has no consent_changed, only
--     what was granted after it; merges folded into the profile earlier show up the same way.
-- Not the `consent` column alone: it is what was granted *now*, region defaults included, and a default is not a
-- decision (a merge that carried the EU default "denied" as a decision would override a later explicit grant of
-- the survivor's). Decided at: the event's received_at (the collector's clock, as the hot path's at_ms).
with

events as (
    select
        profile_id,
        event_id,
        received_at,
        raw_partition,
        raw_offset,
        consent,
        coalesce(from_json(json_extract(ledger, '$.consent_changed'), '["VARCHAR"]'), []::varchar[]) as changed
    from {{ ref('stg_decided') }}
    where profile_id is not null
      and consent is not null
      and json_valid(consent)
),

per_purpose as (
    select
        events.*,
        purpose,
        json_extract_string(events.consent, '$.' || purpose) = 'true' as granted
    from events
    cross join unnest(json_keys(events.consent)) as p(purpose)
    where json_extract_string(events.consent, '$.' || purpose) in ('true', 'false')
),

with_previous as (
    select
        *,
        lag(granted) over (partition by profile_id, purpose
                           order by received_at, raw_partition, raw_offset, event_id) as previous_granted
    from per_purpose
),

decisions as (
    select *
    from with_previous
    where list_contains(changed, purpose)
       or (previous_granted is not null and granted <> previous_granted)
),

final as (
    select
        profile_id || ':' || purpose as decision_id,
        profile_id,
        purpose,
        -- the latest decision; at the same instant a denial wins
        arg_max(granted, (received_at, not granted)) as granted,
        max(received_at) as decided_at,
        arg_max(event_id, (received_at, not granted)) as event_id
    from decisions
    group by profile_id, purpose
)

select * from final
