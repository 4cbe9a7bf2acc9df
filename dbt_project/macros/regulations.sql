{#- The erasure trail the regulations flow keeps under the data directory (warehouse/erasure_trail.py writes it):
    newline-delimited JSON files in FIRSTMILE_REGULATIONS_DIR (default ../data/regulations, beside the lake).

    regulations_relation(name, columns) renders a SELECT over <dir>/<name>.jsonl with the given {column: type}
    (DuckDB types), or a typed empty relation while the file does not exist (no request has arrived yet).
-#}

{% macro regulations_dir() -%}
  {{- return(env_var('FIRSTMILE_REGULATIONS_DIR', '../data/regulations') | string) -}}
{%- endmacro %}

{% macro regulations_relation(name, columns) -%}
  {%- set path = regulations_dir().rstrip('/') ~ '/' ~ name ~ '.jsonl' -%}
  {%- set exists = true -%}
  {%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ path | replace("'", "''") ~ "')") -%}
    {%- set exists = found.columns[0].values()[0] > 0 -%}
  {%- endif -%}
  {%- if exists -%}
    select *
    from read_json('{{ path | replace("'", "''") }}', format = 'newline_delimited', columns = {
      {%- for column, type in columns.items() %}'{{ column }}': '{{ type }}'{{ ',' if not loop.last }}{% endfor -%}
    })
  {%- else -%}
    select
      {%- for column, type in columns.items() %}
      cast(null as {{ type }}) as {{ column }}{{ ',' if not loop.last }}
      {%- endfor %}
    where false
  {%- endif -%}
{%- endmacro %}
