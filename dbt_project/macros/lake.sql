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

{% macro lake_relation(stream) -%}
  {%- set expected = lake_columns(stream) -%}
  {%- set pattern = lake_glob(stream) -%}
  {%- set reader = "read_parquet('" ~ pattern ~ "', hive_partitioning = true, union_by_name = true)" -%}
  {%- set has_files = true -%}
  {%- set present = {} -%}
  {%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')") -%}
    {%- set has_files = found.columns[0].values()[0] > 0 -%}
    {%- if has_files -%}
      {%- for row in run_query("describe select * from " ~ reader) -%}
        {%- do present.update({row[0]: row[1] | upper}) -%}
      {%- endfor -%}
      {%- for name, type in expected.items() -%}
        {%- if name in present and present[name] != type | upper -%}
          {{- exceptions.raise_compiler_error(
                "Landing zone contract violated: stream '" ~ stream ~ "' column '" ~ name ~ "' is " ~ present[name]
                ~ " in " ~ pattern ~ " but the contract (warehouse/lake.py, vars in dbt_project.yml) says " ~ type
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
