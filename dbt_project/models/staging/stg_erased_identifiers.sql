{{ config(materialized='incremental', unique_key='identifier_id', incremental_strategy='delete+insert',
          full_refresh=false, on_schema_change='fail') }}
-- Every identifier seen on the landing zone's rows of an erased profile (the profile id itself, its user ids,
-- anonymous ids, devices, hashed emails). Staging models drop rows carrying any of them; the
-- erasure_suppression_list mart publishes them for the hot path.
-- Accumulating (incremental, full_refresh: false): once warehouse.erasure.erase_profiles has removed a profile's
-- rows from the landing zone, its identifiers can no longer be found there, yet they must stay suppressed.
with

requests as (
    select * from {{ ref('stg_erasure_requests') }}
),

lake as (
    select profile_id, user_id, anonymous_id, device_id, email_hash from ({{ lake_relation('events') }})
    union all
    select profile_id, user_id, anonymous_id, device_id, email_hash from ({{ lake_relation('quarantine') }})
    union all
    select profile_id, user_id, anonymous_id, device_id, email_hash from ({{ lake_relation('suppressed') }})
),

erased_rows as (
    -- equi-joins (an OR join condition is a nested loop)
    select lake.*, requests.profile_id as erased_profile_id, requests.requested_at
    from lake
    inner join requests on lake.profile_id = requests.profile_id
    union all
    select lake.*, requests.profile_id as erased_profile_id, requests.requested_at
    from lake
    inner join requests on lake.user_id = requests.profile_id
    union all
    -- a subject named by its anonymous id (the regulations API's ANONYMOUS_ID): the person behind the device
    select lake.*, requests.profile_id as erased_profile_id, requests.requested_at
    from lake
    inner join requests on lake.anonymous_id = requests.profile_id
),

identifiers as (
    select erased_profile_id, requested_at, 'profile' as identifier_type, erased_profile_id as identifier_value
    from erased_rows
    union all
    select erased_profile_id, requested_at, 'profile', profile_id from erased_rows
    union all
    select erased_profile_id, requested_at, 'user', user_id from erased_rows
    union all
    select erased_profile_id, requested_at, 'anonymous', anonymous_id from erased_rows
    union all
    select erased_profile_id, requested_at, 'device', device_id from erased_rows
    union all
    select erased_profile_id, requested_at, 'email_hash', email_hash from erased_rows
    union all
    -- a request for a profile never seen is still honoured for future events
    select profile_id, requested_at, 'profile', profile_id from requests
    {%- if is_incremental() %}
    union all
    -- identifiers found by earlier runs (the lake may no longer hold them)
    select erased_profile_id, requested_at, identifier_type, identifier_value from {{ this }}
    {%- endif %}
),

final as (
    select
        identifier_type || ':' || identifier_value as identifier_id,
        identifier_type,
        identifier_value,
        min(erased_profile_id) as erased_profile_id,
        min(requested_at) as requested_at
    from identifiers
    where identifier_value is not null
    group by identifier_type, identifier_value
)

select * from final
