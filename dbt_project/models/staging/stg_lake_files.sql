{{ config(materialized='incremental', incremental_strategy='append', on_schema_change='fail') }}
-- Manifest of the decided streams' Parquet files (events, quarantine, suppressed) for incremental processing: one
-- row per file version (filename, size, last_modified). consumed_by_<model> is stamped by that model's post-hook
-- (macro lake_mark_consumed) once it has merged the file; null = pending. Appended to, never rewritten.
{%- set lake = lake_dir().rstrip('/') %}
with

listed as (
    select
        filename,
        split_part(substr(filename, {{ lake | length + 2 }}), '/', 1) as stream,
        size,
        last_modified
    from read_blob('{{ lake }}/*/**/*.parquet')
),

final as (
    select
        filename,
        stream,
        size,
        last_modified,
        cast(null as varchar) as consumed_by_stg_decided,
        cast(null as varchar) as consumed_by_int_session_features
    from listed
    where stream in ('events', 'quarantine', 'suppressed')
    {%- if is_incremental() %}
      and not exists (
          select 1 from {{ this }} as known
          where known.filename = listed.filename
            and known.size = listed.size
            and known.last_modified = listed.last_modified
      )
    {%- endif %}
)

select * from final
