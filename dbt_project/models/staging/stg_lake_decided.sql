-- Raw decided rows of the landing zone (streams events, quarantine, suppressed), typed and renamed, erased
-- profiles removed. Not deduplicated: at-least-once delivery and client retries repeat event ids (stg_decided).
with

events as (
    {{ lake_relation('events') }}
),

quarantine as (
    {{ lake_relation('quarantine') }}
),

suppressed as (
    {{ lake_relation('suppressed') }}
),

unioned as (
    select * from events
    union all by name
    select * from quarantine
    union all by name
    select * from suppressed
),

erased as (
    select identifier_value from {{ ref('stg_erased_identifiers') }}
),

renamed as (
    select
        * exclude (type, event_date),
        type as event_type,
        event_date as lake_partition_date,
        cast(timezone('UTC', event_ts) as date) as event_date,
        -- what the client sent: a retry repeats it, a reused event id does not
        md5(concat_ws('|', coalesce(type, ''), coalesce(event_name, ''), coalesce(anonymous_id, ''),
                      coalesce(user_id, ''), coalesce(properties, ''), coalesce(traits, ''))) as payload_hash
    from unioned
),

final as (
    select *
    from renamed
    where not exists (
        select 1 from erased
        where erased.identifier_value in (
            renamed.profile_id, renamed.user_id, renamed.anonymous_id, renamed.device_id, renamed.email_hash
        )
    )
)

select * from final
