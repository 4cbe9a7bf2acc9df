{#- Reading the landing zone (layout: warehouse/lake.py).

    lake_relation(stream) renders a SELECT over one stream's Parquet files that always has every contracted column
    (vars lake_decided_columns / lake_optional_columns / session_features as f_<name>, lake_delivery_columns or
    lake_dlq_columns), plus
    `stream` and the hive partition `event_date`:
      * a stream with no files yet (no DLQ events, say) gives a typed empty relation instead of an IO error;
      * a contracted column missing from every file is added as a typed NULL;
      * a contracted column whose type changed fails the build, naming the stream, column and both types;
      * any other new column is kept (select *).
-#}

{% macro lake_dir() -%}
  {%- set configured = var('lake_dir', none) -%}
  {{- return((configured if configured else env_var('FIRSTMILE_LAKE_DIR', '../data/lake')) | string) -}}
{%- endmacro %}

{% macro lake_glob(stream) -%}
  {{- return(lake_dir().rstrip('/') ~ '/' ~ stream ~ '/**/*.parquet') -}}
{%- endmacro %}

{% macro lake_columns(stream) -%}
  {%- set columns = {} -%}
  {%- if stream == 'dlq' -%}
    {%- do columns.update(var('lake_dlq_columns')) -%}
  {%- elif stream == 'delivery_outcomes' -%}
    {%- do columns.update(var('lake_outcome_columns')) -%}
  {%- elif stream == 'deliveries' -%}
    {%- set decided = var('lake_decided_columns') -%}
    {%- for name in var('lake_delivery_columns') -%}
      {%- do columns.update({name: decided[name]}) -%}
    {%- endfor -%}
  {%- else -%}
    {%- do columns.update(var('lake_decided_columns')) -%}
    {%- do columns.update(var('lake_optional_columns')) -%}
    {%- for feature in var('session_features') -%}
      {%- do columns.update({'f_' ~ feature: 'DOUBLE'}) -%}
    {%- endfor -%}
  {%- endif -%}
  {{- return(columns) -}}
{%- endmacro %}

{% macro lake_relation(stream, files=none) -%}
  {#- files: none = every file of the stream (glob), else an explicit list of paths (incremental runs). -#}
  {%- set expected = lake_columns(stream) -%}
  {%- if files is none -%}
    {%- set pattern = lake_glob(stream) -%}
  {%- else -%}
    {%- set quoted = [] -%}
    {%- for f in files -%}{%- do quoted.append("'" ~ f | replace("'", "''") ~ "'") -%}{%- endfor -%}
    {%- set pattern = '[' ~ quoted | join(', ') ~ ']' -%}
  {%- endif -%}
  {%- set reader = "read_parquet(" ~ (("'" ~ pattern ~ "'") if files is none else pattern) ~ ", hive_partitioning = true, union_by_name = true)" -%}
  {%- set has_files = true -%}
  {%- set present = {} -%}
  {%- if execute -%}
    {%- if files is none -%}
      {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')") -%}
      {%- set has_files = found.columns[0].values()[0] > 0 -%}
    {%- else -%}
      {%- set has_files = files | length > 0 -%}
    {%- endif -%}
    {%- if has_files -%}
      {%- for row in run_query("describe select * from " ~ reader) -%}
        {%- do present.update({row[0]: row[1] | upper}) -%}
      {%- endfor -%}
      {%- for name, type in expected.items() -%}
        {%- if name in present and present[name] != type | upper -%}
          {{- exceptions.raise_compiler_error(
                "Landing zone contract violated: stream '" ~ stream ~ "' column '" ~ name ~ "' is " ~ present[name]
                ~ " in " ~ (pattern if files is none else lake_glob(stream)) ~ " but the contract (warehouse/lake.py, vars in dbt_project.yml) says " ~ type
                ~ ". Fix the writer or migrate the contract; the build stops rather than cast silently.") -}}
        {%- endif -%}
      {%- endfor -%}
    {%- endif -%}
  {%- endif -%}
  {%- if has_files -%}
    select
      *,
      {%- for name, type in expected.items() if name not in present and execute %}
      cast(null as {{ type }}) as {{ name }},
      {%- endfor %}
      {%- if execute and 'event_date' not in present %}
      cast(null as date) as event_date,
      {%- endif %}
      '{{ stream }}' as stream
    from {{ reader }}
  {%- else -%}
    select
      {%- for name, type in expected.items() %}
      cast(null as {{ type }}) as {{ name }},
      {%- endfor %}
      cast(null as date) as event_date,
      '{{ stream }}' as stream
    where false
  {%- endif -%}
{%- endmacro %}

{#- Columns listed once for models that spell every session feature (warehouse f_<name>, hot path hot_f_<name>). -#}
{% macro feature_columns(prefix='f_', source_prefix=none, relation_alias=none) -%}
  {%- for feature in var('session_features') -%}
    {{ (relation_alias ~ '.') if relation_alias else '' }}{{ (source_prefix or prefix) ~ feature }}{% if source_prefix %} as {{ prefix ~ feature }}{% endif %}{{ ',' if not loop.last }}
  {% endfor -%}
{%- endmacro %}

{#- ---------------------------------------------------------------------------------------------------------------
    Incremental processing of the landing zone.

    stg_lake_files is the manifest of the decided streams' Parquet files (filename, size, last_modified). Each
    incremental consumer (stg_decided, int_session_features) has a column consumed_by_<consumer> in it: the files
    it has not consumed yet are "pending" (for int_session_features only those stg_decided has already merged),
    and its post-hook lake_mark_consumed stamps exactly those with the invocation id once the model's merge has
    succeeded (same transaction). A failed run leaves them pending; a file rewritten in place (erasure, a batch
    re-delivered after a crash) gets a new manifest row and is read again (merges are idempotent).
-#}

{% macro lake_manifest() -%}
  {{- return(adapter.get_relation(database=this.database, schema=this.schema, identifier='stg_lake_files')) -}}
{%- endmacro %}

{% macro lake_pending_files(consumer, after=none) -%}
  {#- {stream: [files]} of the decided streams' files the consumer has not consumed yet. -#}
  {%- set pending = {'events': [], 'quarantine': [], 'suppressed': []} -%}
  {%- set manifest = lake_manifest() -%}
  {%- if execute and manifest is not none -%}
    {%- set sql -%}
      select stream, filename from {{ manifest }}
      where consumed_by_{{ consumer }} is null
      {%- if after %} and consumed_by_{{ after }} is not null{% endif %}
      order by filename
    {%- endset -%}
    {%- for row in run_query(sql) -%}
      {%- do pending[row[0]].append(row[1]) -%}
    {%- endfor -%}
  {%- endif -%}
  {{- return(pending) -}}
{%- endmacro %}

{% macro lake_mark_consumed(consumer, after=none) -%}
  update {{ ref('stg_lake_files') }}
  set consumed_by_{{ consumer }} = '{{ invocation_id }}'
  where consumed_by_{{ consumer }} is null
  {%- if after %} and consumed_by_{{ after }} is not null{% endif %}
{%- endmacro %}

{#- Erased identifiers (stg_erased_identifiers) as literals, so that dropping their rows is a hash-set filter
    (a correlated `not exists (... in (five columns))` made staging 3x slower). -#}
{% macro erased_values() -%}
  {%- set values = [] -%}
  {%- if execute -%}
    {%- set relation = adapter.get_relation(database=this.database, schema=this.schema,
                                            identifier='stg_erased_identifiers') -%}
    {%- if relation is not none -%}
      {%- for row in run_query("select distinct identifier_value from " ~ relation ~ " order by 1") -%}
        {%- do values.append(row[0]) -%}
      {%- endfor -%}
    {%- endif -%}
  {%- endif -%}
  {{- return(values) -}}
{%- endmacro %}

{% macro not_erased(columns, alias=none) -%}
  {%- set values = erased_values() -%}
  {%- if values | length == 0 -%}
    true
  {%- else -%}
    {%- set literals -%}
      {%- for v in values %}'{{ v | replace("'", "''") }}'{{ ',' if not loop.last }}{% endfor -%}
    {%- endset -%}
    {%- set prefix = (alias ~ '.') if alias else '' %}
    ({% for c in columns %}({{ prefix }}{{ c }} is null or {{ prefix }}{{ c }} not in ({{ literals }})){{ ' and ' if not loop.last }}{% endfor %})
  {%- endif -%}
{%- endmacro %}

{#- The erasure state an incremental model reflects is kept in its table comment; when the set of erased
    identifiers changes, the model is rebuilt from everything (pre-hook erasure_reset empties it) instead of
    merging, so that an erasure never leaves a row behind. -#}
{% macro erasure_fingerprint() -%}
  {%- set relation = adapter.get_relation(database=this.database, schema=this.schema,
                                          identifier='stg_erased_identifiers') -%}
  {%- if not execute or relation is none -%}{{ return('none') }}{%- endif -%}
  {%- set result = run_query("select coalesce(md5(string_agg(identifier_id, ',' order by identifier_id)), 'none') from " ~ relation) -%}
  {{- return('erasure:' ~ result.columns[0].values()[0]) -}}
{%- endmacro %}

{% macro erasure_changed() -%}
  {%- if not execute or not is_incremental() -%}{{ return(false) }}{%- endif -%}
  {%- set stored = run_query("select comment from duckdb_tables() where database_name = '" ~ this.database
                             ~ "' and schema_name = '" ~ this.schema ~ "' and table_name = '" ~ this.identifier ~ "'") -%}
  {%- set value = stored.columns[0].values()[0] if stored.rows | length > 0 else none -%}
  {{- return(value != erasure_fingerprint()) -}}
{%- endmacro %}

{% macro erasure_reset() -%}
  {%- if erasure_changed() -%}
  delete from {{ this }}
  {%- else -%}
  select 1
  {%- endif -%}
{%- endmacro %}

{% macro erasure_remember() -%}
  comment on table {{ this }} is '{{ erasure_fingerprint() }}'
{%- endmacro %}

{#- The decided streams' rows (events, quarantine, suppressed) as stg_lake_decided defines them, over every file
    (files=none) or over {stream: [files]}. -#}
{% macro lake_decided_rows(files=none) -%}
with

events as (
    {{ lake_relation('events', files['events'] if files is not none else none) }}
),

quarantine as (
    {{ lake_relation('quarantine', files['quarantine'] if files is not none else none) }}
),

suppressed as (
    {{ lake_relation('suppressed', files['suppressed'] if files is not none else none) }}
),

unioned as (
    select * from events
    union all by name
    select * from quarantine
    union all by name
    select * from suppressed
),

renamed as (
    select
        * exclude (type, event_date),
        type as event_type,
        event_date as lake_partition_date,
        cast(timezone('UTC', event_ts) as date) as event_date,
        -- what the client sent: a retry repeats it, a reused event id does not. The hot path hashes it once, the
        -- way it recognises a retry, and stamps it on the ledger; records written before it did are hashed here.
        coalesce(json_extract_string(ledger, '$.payload_hash'),
                 md5(concat_ws('|', coalesce(type, ''), coalesce(event_name, ''), coalesce(anonymous_id, ''),
                               coalesce(user_id, ''), coalesce(properties, ''), coalesce(traits, '')))) as payload_hash
    from unioned
    where {{ not_erased(['profile_id', 'user_id', 'anonymous_id', 'device_id', 'email_hash']) }}
)

select * from renamed
{%- endmacro %}

{#- int_session_features post-hook: an event id that moved to another device (a new delivery won the dedupe) must
    not stay behind on the old device when that device has no event left to trigger its recomputation. -#}
{% macro session_features_drop_moved() -%}
  {%- if is_incremental() and not erasure_changed() -%}
  delete from {{ this }} as kept
  where not exists (
      select 1 from {{ ref('stg_decided') }} as decided
      where decided.event_id = kept.event_id and decided.device_id = kept.device_id
  )
  and kept.event_id in (
      select event_id from ({{ lake_decided_rows(files=lake_pending_files('int_session_features', after='stg_decided')) }})
  )
  {%- else -%}
  select 1
  {%- endif -%}
{%- endmacro %}
