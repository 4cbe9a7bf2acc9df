-- Raw decided rows of the landing zone (streams events, quarantine, suppressed), typed and renamed, erased
-- profiles removed. Not deduplicated: at-least-once delivery and client retries repeat event ids (stg_decided).
-- The SQL lives in macro lake_decided_rows (macros/lake.sql): stg_decided runs it over new files only.
-- depends_on: {{ ref('stg_erased_identifiers') }}
{{ lake_decided_rows() }}
