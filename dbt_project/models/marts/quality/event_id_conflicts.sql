-- Event ids reused for different payloads (not a retry: type, name, ids, properties or traits differ). Staging
-- keeps the first delivery; these are listed for investigation rather than merged silently.
with

deliveries as (
    select event_id, payload_hash, stream, device_id, received_at from {{ ref('stg_lake_decided') }}
    where event_id is not null
      -- a retry the hot path recognised is a retry, not a conflicting reuse (its record carries no payload)
      and not (stream = 'suppressed' and coalesce(json_extract_string(ledger, '$.reason'), '') = 'duplicate_event_id')
),

repeated as (
    -- only ids delivered more than once can conflict: a narrow group-by first, the payload details after
    select event_id from deliveries group by event_id having count(*) > 1
),

final as (
    select
        event_id,
        count(*) as deliveries,
        count(distinct payload_hash) as distinct_payloads,
        array_to_string(list_sort(list_distinct(list(stream))), ',') as streams,
        array_to_string(list_sort(list_distinct(list(device_id))), ',') as device_ids,
        min(received_at) as first_received_at,
        max(received_at) as last_received_at
    from deliveries
    semi join repeated using (event_id)
    group by event_id
    having count(distinct payload_hash) > 1
)

select * from final
